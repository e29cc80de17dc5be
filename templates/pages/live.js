// Live pages: when the appliance says something this page shows has changed, read the page
// again and put its new <main> in place. The server renders every page; this script only
// decides when to ask. A page without it (no JavaScript) is the same page, not live.
(function () {
  "use strict";
  var main = document.querySelector("main[data-watch]");
  if (!main || !window.EventSource || !window.fetch || !window.DOMParser) return;
  var watch = main.getAttribute("data-watch");
  if (!watch) return;
  // The overview of a large site is the heaviest page: read it again at most this often.
  var every = watch === "all" ? 5000 : 1000;
  var last = 0, timer = null, busy = false, source = null, lost = false;

  function wanted(c) {
    // The overview shows states, not progress.
    if (watch === "all") return !!c.state;
    if (watch.indexOf("node:") === 0) return c.node === watch.slice(5);
    // A rack's pages: its checklist, and its nodes (a node that joins or leaves the rack is
    // told to it too).
    if (watch.indexOf("rack:") === 0) return c.rack === watch.slice(5);
    return false;
  }

  // Someone typing into a form on the page keeps what they typed: wait until they are done.
  function editing() {
    var a = document.activeElement;
    if (a && main.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName)) return true;
    var fields = main.querySelectorAll("input[type=text], textarea");
    for (var i = 0; i < fields.length; i++) if (fields[i].value !== fields[i].defaultValue) return true;
    return false;
  }

  // Many open pages do not all ask at the same moment.
  function later(ms) {
    if (timer === null) timer = setTimeout(refresh, ms + Math.floor(Math.random() * 300));
  }

  function refresh() {
    timer = null;
    var wait = last + every - Date.now();
    if (wait > 0) return later(wait);
    if (busy || editing()) return later(1000);
    busy = true;
    last = Date.now();
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        busy = false;
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (!fresh || editing()) return later(1000);
        main.innerHTML = fresh.innerHTML;
        document.body.setAttribute("data-refreshed", String(Date.now()));
      }, function () { busy = false; later(5000); });
  }

  function listen() {
    source = new EventSource("/events");
    source.addEventListener("hello", function () {
      document.body.setAttribute("data-live", "yes");
      // Whatever changed while the page was not listening.
      if (lost) later(0);
      lost = false;
    });
    source.addEventListener("change", function (e) {
      var c;
      try { c = JSON.parse(e.data); } catch (_) { return later(300); }
      if (wanted(c)) later(300);
    });
    source.addEventListener("resync", function () { later(300); });
    source.onerror = function () { lost = true; document.body.setAttribute("data-live", "no"); };
  }

  // A browser holds few connections to one HTTP/1.1 server: a page out of sight gives its
  // stream back, and catches up when it is seen again.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (source) { source.close(); source = null; lost = true; }
      document.body.setAttribute("data-live", "paused");
    } else if (!source) {
      listen();
    }
  });
  if (!document.hidden) listen();
})();
