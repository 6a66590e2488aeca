from nurture.sending.ratelimit import Pacer, WindowLimiter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_window_limiter_allows_limit_then_says_how_long_to_wait():
    clock = FakeClock()
    limiter = WindowLimiter(2, 60, clock)
    assert limiter.hit("ip") == 0 and limiter.hit("ip") == 0
    assert limiter.hit("ip") == 60
    assert limiter.hit("other") == 0
    clock.now = 60
    assert limiter.hit("ip") == 0


def test_window_limiter_forgets_quiet_clients():
    clock = FakeClock()
    limiter = WindowLimiter(1, 10, clock)
    for i in range(100):
        limiter.hit(f"ip{i}")
    clock.now = 30
    limiter.hit("new")
    assert len(limiter._hits) == 1


def test_pacer_spaces_sends():
    clock = FakeClock()
    pacer = Pacer(per_second=4, clock=clock, sleep=clock.sleep)
    for _ in range(9):
        pacer.wait()
    assert abs(clock.now - 2.0) < 1e-9


def test_pacer_hourly_cap_blocks_until_the_window_moves():
    clock = FakeClock()
    pacer = Pacer(per_hour=3, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        pacer.wait()
    assert clock.now >= 3600


def test_senders_of_one_runtime_share_one_pacer(tmp_path):
    from nurture.config import load_settings
    from nurture.runtime import Runtime

    settings = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_RATE_PER_SECOND": "5",
                              "NURTURE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    runtime = Runtime(settings)
    web, scheduler = runtime.sender(), runtime.sender()
    assert web.pacer is scheduler.pacer and web.pacer.interval == 0.2
    assert web.worker != scheduler.worker  # each releases only its own claims
