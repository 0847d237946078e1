// hookyard web UI: keeps the first page of events live. The page works without it.
// Every few seconds it asks /ui/events/rows (same filters) for the server-rendered rows and
// swaps them in when they changed, keeping keyboard focus on the same event. The first answer
// is compared with the rows the page came with (by their text): whatever changed between the
// page's render and the script's start is shown too.
(function () {
  "use strict";
  var INTERVAL_MS = 3000;
  var body = document.getElementById("event-rows");
  var status = document.getElementById("live-status");
  if (!body || !body.dataset.live) return;
  var url = body.dataset.live;
  var last = null;
  var timer = null;

  function ids(root) {
    return Array.prototype.map.call(root.querySelectorAll("tr[id^='row-']"), function (tr) {
      return tr.id;
    });
  }

  function words(root) {
    return root.textContent.replace(/\s+/g, " ").trim();
  }

  function differs(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    return words(template.content) !== words(body);
  }

  function say(text) {
    if (status) status.textContent = text;
  }

  function swap(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var before = ids(body);
    var focused = document.activeElement;
    var focusRow = focused && body.contains(focused) ? focused.closest("tr") : null;
    var focusId = focusRow ? focusRow.id : null;
    var fresh = ids(template.content).filter(function (id) { return before.indexOf(id) < 0; });
    body.replaceChildren(template.content);
    fresh.forEach(function (id) {
      var row = document.getElementById(id);
      if (row) row.classList.add("fresh");
    });
    if (focusId) {
      var link = document.querySelector("#" + CSS.escape(focusId) + " a");
      if (link) link.focus();
    }
    if (fresh.length && before.length) {
      say(fresh.length + (fresh.length === 1 ? " new event" : " new events") + " at " +
        new Date().toLocaleTimeString());
    }
  }

  function tick() {
    if (document.hidden) return;
    fetch(url, { credentials: "same-origin", redirect: "manual", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.type === "opaqueredirect" || response.status === 401) {
          say("Signed out: reload the page to sign in again.");
          clearInterval(timer);
          return null;
        }
        if (!response.ok) {
          say("Live updates paused: hookyard answered " + response.status + ".");
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null || html === last) return;
        if (last !== null || differs(html)) swap(html);
        last = html;
      })
      .catch(function () { say("Live updates paused: hookyard does not answer."); });
  }

  tick();
  timer = setInterval(tick, INTERVAL_MS);
})();
