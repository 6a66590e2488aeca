/* nurture studio: tabs, preview sizing, test sends, and reloading by itself when a template is saved.
   The server pushes a "change" event on /events (Server-Sent Events); the page then fetches itself
   and swaps the list and the main pane, keeping the open tab, the scroll position and what was typed. */
(function () {
  'use strict';

  var TABS = ['preview', 'text', 'raw', 'validation'];

  function $(id) { return document.getElementById(id); }

  // ------------------------------------------------------------------ tabs
  function currentTab() {
    var name = location.hash.replace('#', '');
    return TABS.indexOf(name) >= 0 ? name : 'preview';
  }

  function showTab(name) {
    TABS.forEach(function (tab) {
      var button = $('tab-' + tab), panel = $(tab);
      if (!button || !panel) return;
      var on = tab === name;
      button.setAttribute('aria-selected', on ? 'true' : 'false');
      button.tabIndex = on ? 0 : -1;
      panel.hidden = !on;
    });
    if (name === 'preview') fitDevices();
  }

  function initTabs() {
    var list = document.querySelector('.tablist');
    if (!list) return;
    list.addEventListener('click', function (event) {
      var tab = event.target.closest('[role=tab]');
      if (!tab) return;
      event.preventDefault();
      var name = tab.getAttribute('aria-controls');
      history.replaceState(null, '', name === 'preview' ? location.pathname + location.search : '#' + name);
      showTab(name);
    });
    list.addEventListener('keydown', function (event) {
      if (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft') return;
      var i = TABS.indexOf(currentTab()) + (event.key === 'ArrowRight' ? 1 : -1);
      var next = $('tab-' + TABS[(i + TABS.length) % TABS.length]);
      if (next) { next.click(); next.focus(); }
    });
    showTab(currentTab());
  }

  // In-page links to a tab (e.g. "see Validation") switch tabs too.
  window.addEventListener('hashchange', function () { showTab(currentTab()); });

  // ------------------------------------------------------------------ previews
  function sizeFrame(frame) {
    try {
      var doc = frame.contentDocument;
      if (!doc || !doc.documentElement) return;
      var height = Math.max(doc.documentElement.scrollHeight, doc.body ? doc.body.scrollHeight : 0);
      if (height > 50) frame.style.height = height + 'px';
    } catch (e) { /* not same-origin: keep the fixed height */ }
  }

  // Desktop (600 px) and phone (375 px) side by side need about 1000 px. On a narrower pane the phone
  // wraps below the desktop, so both stay at true size (what a reader sees); only a pane narrower than
  // one frame shrinks it, with CSS zoom, which keeps each frame's own width (the phone layout still applies).
  function fitDevices() {
    var wrap = $('devices-wrap'), row = $('devices'), note = $('scale-note');
    if (!wrap || !row || wrap.offsetParent === null) return;
    row.style.zoom = '';
    var room = wrap.clientWidth, widest = 0, devices = row.querySelectorAll('.device');
    devices.forEach(function (d) { widest = Math.max(widest, d.scrollWidth); });
    // A multiple of 1/75, so 600 and 375 px scale to whole pixels and the frames keep exactly those widths.
    var scale = widest > room ? Math.max(0.5, Math.floor(room / widest * 75) / 75) : 1;
    if (scale < 1) row.style.zoom = String(scale);
    var stacked = devices.length > 1 && devices[1].offsetTop > devices[0].offsetTop;
    if (note) {
      note.hidden = scale >= 1 && !stacked;
      note.textContent = scale < 1 ? 'Shown at ' + Math.round(scale * 100) + '% to fit this window; widen it for true size.'
        : 'Both at true size; the phone is below the desktop. Widen the window to see them side by side.';
    }
  }

  function initFrames() {
    document.querySelectorAll('iframe[data-frame]').forEach(function (frame) {
      frame.addEventListener('load', function () {
        sizeFrame(frame);
        // Images arrive after load and can make the email taller.
        setTimeout(function () { sizeFrame(frame); }, 400);
      });
      sizeFrame(frame);
    });
    fitDevices();
  }
  window.addEventListener('resize', fitDevices);

  // ------------------------------------------------------------------ send test
  function initSend() {
    var form = $('send');
    if (!form) return;
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var result = $('send-result'), button = form.querySelector('button');
      button.disabled = true;
      result.className = 'send-result';
      result.textContent = 'Sending…';
      fetch(form.action, { method: 'POST', body: new URLSearchParams(new FormData(form)),
                           headers: { 'Accept': 'application/json' } })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          result.className = 'send-result ' + (data.ok ? 'ok' : 'error');
          result.textContent = data.message;
        })
        .catch(function () {
          result.className = 'send-result error';
          result.textContent = 'The studio did not answer. Is `nurture studio` still running?';
        })
        .then(function () { button.disabled = false; });
    });
  }

  // ------------------------------------------------------------------ journey form
  // The journey table follows the form as it is edited, without reloading the page (the focus stays
  // in the field being typed in); the Show button submits normally where scripts do not run.
  function initJourney() {
    var form = $('journey-form');
    if (!form) return;
    var timer = null, asked = 0;
    function update() {
      var query = new URLSearchParams(new FormData(form)).toString(), mine = ++asked;
      fetch('/journey?' + query, { cache: 'no-store' })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          if (mine !== asked) return;  // a newer edit is on its way
          var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('journey-results');
          if (fresh && $('journey-results')) $('journey-results').innerHTML = fresh.innerHTML;
          history.replaceState(null, '', '/journey?' + query);
        });
    }
    function soon() { clearTimeout(timer); timer = setTimeout(update, 250); }
    form.addEventListener('input', soon);
    form.addEventListener('change', soon);
    form.addEventListener('submit', function (event) { event.preventDefault(); update(); });
  }

  // ------------------------------------------------------------------ keyboard: j / k
  document.addEventListener('keydown', function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest && event.target.closest('input, select, textarea, button')) return;
    if (event.key !== 'j' && event.key !== 'k') return;
    var items = Array.prototype.slice.call(document.querySelectorAll('.side .item'));
    var at = items.findIndex(function (a) { return a.hasAttribute('aria-current'); });
    var next = items[event.key === 'j' ? at + 1 : (at < 0 ? items.length - 1 : at - 1)];
    if (next) location.href = next.getAttribute('href') + location.hash;
  });

  // ------------------------------------------------------------------ live reload
  var refreshing = false, again = false;

  function setLive(state, text) {
    var live = $('live');
    if (!live) return;
    live.dataset.state = state;
    $('live-text').textContent = text;
  }

  function refresh(files) {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(location.pathname + location.search, { cache: 'no-store', headers: { 'X-Studio-Refresh': '1' } })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var typed = $('send-to') ? $('send-to').value : null;
        var heights = {};
        document.querySelectorAll('iframe[data-frame]').forEach(function (f) { heights[f.dataset.frame] = f.style.height; });
        ['side', 'main', 'badge'].forEach(function (id) {
          var old = $(id), fresh = doc.getElementById(id);
          if (old && fresh) old.innerHTML = fresh.innerHTML;  // the same element: its scroll position stays
        });
        // The new frames start at their old height, so the pane does not jump while they load.
        // (Set through the DOM: the page's CSP refuses style="" attributes.)
        document.querySelectorAll('iframe[data-frame]').forEach(function (f) {
          if (heights[f.dataset.frame]) f.style.height = heights[f.dataset.frame];
        });
        document.title = doc.title;
        document.body.dataset.stamp = doc.body.dataset.stamp;
        if (typed !== null && $('send-to')) $('send-to').value = typed;
        init();
        var when = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
        var what = files && files.length ? files.join(', ') : 'templates';
        setLive('updated', 'Updated ' + when);
        var live = $('live');
        if (live) live.title = 'Reloaded after a change to ' + what;
        setTimeout(function () { if (live && live.dataset.state === 'updated') live.dataset.state = 'on'; }, 4000);
      })
      .catch(function () { location.reload(); })
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  function connect() {
    if (!window.EventSource) return;
    var source = new EventSource('/events');
    source.addEventListener('hello', function (event) {
      setLive('on', 'Live reload on');
      // A change saved while the stream was down (or before it opened): catch up now.
      if (event.data !== document.body.dataset.stamp) refresh();
    });
    source.addEventListener('change', function (event) {
      var info = {};
      try { info = JSON.parse(event.data); } catch (e) { /* keep going */ }
      if (info.stamp !== document.body.dataset.stamp) refresh(info.files);
    });
    source.addEventListener('error', function () { setLive('off', 'Reconnecting…'); });
  }

  function init() {
    initTabs();
    initFrames();
    initSend();
    initJourney();
  }

  document.addEventListener('DOMContentLoaded', function () {
    init();
    connect();
  });
}());
