// Progressive enhancement of the run page: follow a running run's output live.
// The page works without this file; it only polls the JSON endpoint the page names
// (data-poll) with the last line seen (after=), appends lines as text nodes (never as HTML)
// and stops once the run has ended.
(function () {
  "use strict";
  var out = document.getElementById("output");
  if (!out || out.dataset.running !== "true") { return; }
  var after = parseInt(out.dataset.after || "0", 10) || 0;
  var hint = document.getElementById("live-hint");
  var status = document.getElementById("run-status");
  var empty = document.getElementById("no-output");
  if (hint) { hint.textContent = "Live: following this run's output."; }

  function append(lines) {
    var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    lines.forEach(function (l) {
      var span = document.createElement("span");
      span.className = "line " + l.stream;
      span.title = l.utc;
      span.textContent = l.line + "\n";
      out.appendChild(span);
    });
    if (lines.length && empty) { empty.remove(); empty = null; }
    if (lines.length && atBottom) { window.scrollTo(0, document.body.scrollHeight); }
  }

  function poll() {
    fetch(out.dataset.poll + "?after=" + after, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (data) {
        append(data.lines);
        after = data.after;
        if (data.more) { poll(); return; }
        if (data.running) { setTimeout(poll, 1000); return; }
        if (status) {
          var s = document.createElement("span");
          s.className = "status s-" + data.status;
          s.textContent = data.status;
          status.replaceChildren(s);
        }
        if (hint) { hint.textContent = "The run has ended (" + data.status + "). Reload for its final record."; }
      })
      .catch(function (err) {
        if (hint) { hint.textContent = "Live output stopped (" + err.message + "); reload to see more."; }
      });
  }
  setTimeout(poll, 500);
}());
