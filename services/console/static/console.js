// Fleetline console: live updates from server-sent events, and confirmations for
// destructive forms. Served from the console itself; the CSP allows no inline script.
"use strict";

function setStatus(el, status) {
  if (!el) return;
  el.textContent = status;
  // "cancelling..." (a running command being stopped) has the class status-cancelling.
  el.className = el.className.replace(/\bstatus-[a-z_]+\b/g, "").trim() + " status-" + status.replace(/\.+$/, "");
}

function drawJob(job) {
  document.querySelectorAll('[data-job="' + job.id + '"]').forEach(function (el) {
    setStatus(el.querySelector("[data-job-status]"), job.status);
    Object.keys(job.counts).forEach(function (status) {
      var count = el.querySelector('[data-count="' + status + '"]');
      if (!count) return;
      count.dataset.n = job.counts[status];
      count.querySelector("b").textContent = job.counts[status];
      count.classList.toggle("zero", job.counts[status] === 0);
    });
    var x = 0;
    el.querySelectorAll("svg.bar rect[data-status]").forEach(function (rect) {
      var width = job.target_count ? 100 * (job.counts[rect.dataset.status] || 0) / job.target_count : 0;
      rect.setAttribute("x", x.toFixed(3));
      rect.setAttribute("width", width.toFixed(3));
      x += width;
    });
    var finished = el.querySelector("[data-job-finished]");
    if (finished && job.finished_at) finished.textContent = job.finished_at.slice(0, 19).replace("T", " ") + " UTC";
    if (job.status !== "running" && job.status !== "awaiting_approval") {
      el.querySelectorAll("form.cancel-job").forEach(function (form) { form.remove(); });
    }
    if (job.status !== "awaiting_approval") {  // decided: the approval box goes
      el.querySelectorAll("[data-awaiting]").forEach(function (box) { box.remove(); });
    }
  });
}

function drawRow(selector, item) {
  var row = document.querySelector(selector);
  if (!row) return;
  setStatus(row.querySelector('[data-field="status"]'), item.status);
  var exit = row.querySelector('[data-field="exit_code"]');
  if (exit) exit.textContent = item.exit_code === null || item.exit_code === undefined ? "" : item.exit_code;
}

function cell(row, text, className) {
  var td = document.createElement("td");
  td.textContent = text;  // never markup: actors, targets and details come from anyone
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function auditRow(e) {
  var row = document.createElement("tr");
  row.dataset.event = e.id;
  cell(row, e.at.slice(0, 19).replace("T", " ") + " UTC");
  cell(row, e.actor.name + " (" + e.actor.type + ")");
  cell(row, e.action);
  cell(row, e.target ? e.target.type + " " + (e.target.id || "").slice(0, 8) : "");
  cell(row, e.outcome, "outcome-" + e.outcome);
  cell(row, e.source_ip || "");
  cell(row, JSON.stringify(e.details), "details");
  return row;
}

function followOutput(pre) {
  // A running command's output, appended as it arrives (text, never markup); the page
  // reloads once the command has ended, to show its result.
  var source = new EventSource(pre.dataset.output);
  source.addEventListener("output", function (event) {
    pre.appendChild(document.createTextNode(JSON.parse(event.data).data));
    pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("complete", function (event) {
    source.close();
    var state = document.querySelector("[data-output-state]");
    if (state) state.textContent = JSON.parse(event.data).truncated ? "complete (cut at the cap)" : "complete";
    pre.dataset.complete = "yes";
    window.setTimeout(function () { window.location.reload(); }, 1500);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("pre[data-output]").forEach(function (pre) {
    if (window.EventSource) followOutput(pre);
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  var live = document.querySelector("[data-events]");
  if (!live || !window.EventSource) return;
  var source = new EventSource(live.dataset.events);
  source.addEventListener("jobs", function (event) {
    JSON.parse(event.data).jobs.forEach(drawJob);
  });
  source.addEventListener("job", function (event) {
    var data = JSON.parse(event.data);
    drawJob(data.job);
    data.targets.forEach(function (t) { drawRow('[data-target="' + t.id + '"]', t); });
  });
  source.addEventListener("audit", function (event) {
    var body = live.querySelector("tbody");
    JSON.parse(event.data).events.slice().reverse().forEach(function (e) {
      if (body.querySelector('[data-event="' + e.id + '"]')) return;
      var none = body.querySelector("tr.none");
      if (none) none.remove();
      body.insertBefore(auditRow(e), body.firstChild);
    });
  });
  source.addEventListener("commands", function (event) {
    JSON.parse(event.data).commands.forEach(function (c) { drawRow('[data-command="' + c.id + '"]', c); });
  });
  document.body.dataset.live = "on";
});

// A where box tells, as the operator types, how many machines it means and which (text only).
function wherePreview(input) {
  var out = document.getElementById(input.dataset.wherePreview);
  var timer = null;
  input.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () {
      if (!input.value.trim()) { out.textContent = ""; return; }
      var labels = document.getElementById("labels");
      var url = "/console/where-preview?where=" + encodeURIComponent(input.value) +
        (labels && labels.value ? "&labels=" + encodeURIComponent(labels.value) : "");
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (p) {
          out.textContent = p.error ? p.error :
            p.target_count + " machines: " + p.hostnames.join(", ") + (p.target_count > p.hostnames.length ? ", ..." : "");
        })
        .catch(function () { out.textContent = ""; });
    }, 400);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-where-preview]").forEach(wherePreview);
});
