// The reader's own time zone, so emails arrive in their morning; the server falls back to the clinic's.
try { document.getElementById("timezone").value = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) {}
