/* DeltaVault live updates: subscribes to the job WebSockets and patches the page in place (no reload).
 * Pages mark what they want with data attributes:
 *   <body data-ws="/ws/teams/<slug>/jobs/">  with rows  <tr data-job-id="42"> ... </tr>  (job list)
 *   <body data-ws="/ws/jobs/42/" data-job-page="42">                                  (job page)
 * Every message is {"type": "job.state"|"job.update", "job": {...}} or {"type": "jobs.state", "jobs": [...]}.
 * window.deltavault.seen keeps [job id, progress, status, receive time] per message (used by the e2e tests and
 * the platform benchmark to see intermediate progress values). */
(function () {
  "use strict";
  var dv = (window.deltavault = window.deltavault || { seen: [], connected: false, messages: 0 });

  function qs(sel, root) { return (root || document).querySelector(sel); }
  function qsa(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function pct(p) { return (Math.round((Number(p) || 0) * 10) / 10).toFixed(1) + "%"; }
  var FINAL = { succeeded: 1, failed: 1, cancelled: 1 };
  // Close codes of a permanent refusal (webapp/dashboard/consumers.py); any other close is retried with backoff.
  var REFUSED = { 4401: "logged out", 4403: "access withdrawn", 4404: "not found" };

  function setProgress(root, job) {
    qsa(".progress", root).forEach(function (el) {
      el.className = "progress" + (el.classList.contains("big") ? " big" : "") + " " + job.status;
      var bar = qs(".bar", el);
      if (bar) bar.style.width = Math.max(0, Math.min(100, Number(job.progress) || 0)) + "%";
      el.setAttribute("aria-valuenow", String(job.progress));
    });
    qsa(".pct", root).forEach(function (el) { el.textContent = pct(job.progress); });
    qsa("[data-field=status]", root).forEach(function (el) {
      el.textContent = job.status; el.className = "badge " + job.status;
    });
    qsa("[data-field=stage]", root).forEach(function (el) { el.textContent = job.stage || ""; });
  }

  function fmt(v) {
    if (typeof v === "number") {
      if (Number.isInteger(v)) return v.toLocaleString();
      return Math.abs(v) >= 100 ? v.toFixed(1) : String(Number(v.toPrecision(4)));
    }
    if (v === null || v === undefined) return "";
    if (typeof v === "boolean") return String(v);
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // The training loss of every step (metrics.training_loss = [[step, loss], ...]) as a line that grows.
  function drawTraining(page, metrics) {
    var panel = qs("[data-field=training]", page);
    var series = metrics.training_loss;
    if (!panel || !Array.isArray(series) || !series.length) return;
    panel.hidden = false;
    var svg = qs("svg", panel), W = 640, H = 220, L = 56, R = 10, T = 10, B = 28;
    var steps = Math.max(metrics.training_steps || 0, series[series.length - 1][0], 2);
    var lo = Infinity, hi = -Infinity;
    series.forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
    if (hi <= lo) { hi = lo + (Math.abs(lo) || 1) * 0.1; }
    function x(step) { return L + (W - L - R) * (step - 1) / Math.max(steps - 1, 1); }
    function y(loss) { return T + (H - T - B) * (hi - loss) / (hi - lo); }
    var points = series.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" ");
    svg.innerHTML =
      '<line x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '" stroke="#adb5bd"/>' +
      '<line x1="' + L + '" y1="' + T + '" x2="' + L + '" y2="' + (H - B) + '" stroke="#adb5bd"/>' +
      '<text x="' + (L - 4) + '" y="' + (T + 10) + '" text-anchor="end" font-size="11">' + fmt(hi) + '</text>' +
      '<text x="' + (L - 4) + '" y="' + (H - B) + '" text-anchor="end" font-size="11">' + fmt(lo) + '</text>' +
      '<text x="' + L + '" y="' + (H - 8) + '" font-size="11">step 1</text>' +
      '<text x="' + (W - R) + '" y="' + (H - 8) + '" text-anchor="end" font-size="11">step ' + steps + '</text>' +
      '<polyline fill="none" stroke="#3b5bdb" stroke-width="1.5" points="' + points + '"/>';
    var last = series[series.length - 1];
    var label = qs("[data-field=training_step]", panel);
    if (label) label.textContent = "step " + last[0] + " of " + steps + ": loss " + fmt(last[1]) +
      " (first " + fmt(series[0][1]) + ")";
  }

  function updateJobPage(job) {
    var page = qs("[data-job-page]");
    if (!page || String(page.getAttribute("data-job-page")) !== String(job.id)) return;
    setProgress(page, job);
    var err = qs("[data-field=error]", page);
    if (err) { err.textContent = job.error || ""; err.closest(".panel").hidden = !job.error; }
    var log = qs("[data-field=log_tail]", page);
    if (log) { var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4; log.textContent = job.log_tail || ""; if (atEnd) log.scrollTop = log.scrollHeight; }
    var metrics = qs("[data-field=metrics]", page);
    if (metrics && Array.isArray(job.metrics_display)) {
      // Labels with units and formatted values come from the server (webapp.jobs.metrics), raw values stay in REST.
      metrics.innerHTML = "";
      job.metrics_display.forEach(function (row) {
        if (row.key === "training_loss") return;  // drawn as a chart
        var dt = document.createElement("dt"); dt.textContent = row.label; dt.setAttribute("data-metric", row.key);
        var dd = document.createElement("dd"); dd.textContent = row.text;
        metrics.appendChild(dt); metrics.appendChild(dd);
      });
    }
    drawTraining(page, job.metrics || {});
    ["started_at", "finished_at"].forEach(function (key) {
      var el = qs("[data-field=" + key + "]", page);
      if (el && job[key]) el.textContent = String(job[key]).slice(0, 19).replace("T", " ");
    });
    var cancel = qs("[data-action=cancel]", page);
    if (cancel) cancel.disabled = !!FINAL[job.status] || !!job.cancel_requested;
    var retry = qs("[data-action=retry]", page);
    if (retry) retry.disabled = !(job.status === "failed" || job.status === "cancelled");
    var art = qs("[data-field=artifact]", page);
    if (art && job.artifact_id) {
      art.hidden = false;
      var link = qs("a", art);
      if (link) link.href = link.getAttribute("data-href-template").replace("0", String(job.artifact_id));
    }
  }

  function updateJobRow(job) {
    var table = qs("table[data-jobs]");
    if (!table) return;
    var row = qs('tr[data-job-id="' + job.id + '"]', table);
    var pairPage = document.body.getAttribute("data-pair-page");
    if (!row && pairPage && String(job.pair_id) !== pairPage) return;   // the pair page lists its own jobs only
    if (!row && document.body.hasAttribute("data-jobs-filtered")) return;  // a filtered or older page: no new rows
    if (!row) {
      var tpl = qs("#job-row-template");
      if (!tpl) return;
      row = tpl.content.firstElementChild.cloneNode(true);
      row.setAttribute("data-job-id", job.id);
      qsa("a[data-job-link]", row).forEach(function (a) { a.href = a.getAttribute("href").replace("0", String(job.id)); a.textContent = "#" + job.id; });
      var body = qs("tbody", table);
      body.insertBefore(row, body.firstChild);
      var none = qs("[data-no-jobs]"); if (none) none.hidden = true;
    }
    qsa("[data-field=kind]", row).forEach(function (el) { el.textContent = job.kind || ""; });
    qsa("[data-field=codec]", row).forEach(function (el) { el.textContent = job.codec || ""; });
    qsa("[data-field=pair]", row).forEach(function (el) { if (!el.textContent) el.textContent = job.pair_name || ""; });
    qsa("[data-field=model]", row).forEach(function (el) {
      if (!el.textContent) el.textContent = job.model_name || (job.input_artifact_id ? "artifact #" + job.input_artifact_id : "");
    });
    qsa("[data-field=who]", row).forEach(function (el) { el.textContent = job.created_by || ""; });
    setProgress(row, job);
  }

  // On a pair page, a finished job of the pair brings a new artifact: refresh the comparison table in place.
  var refreshing = false;
  function refreshComparison(job) {
    var pairPage = document.body.getAttribute("data-pair-page");
    if (!pairPage || String(job.pair_id) !== pairPage || job.status !== "succeeded" || refreshing) return;
    if (job.artifact_id && qs('tr[data-artifact-id="' + job.artifact_id + '"]')) return;
    refreshing = true;
    fetch(location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      ["#comparison", ".chart"].forEach(function (sel) {
        var fresh = qs(sel, doc), old = qs(sel);
        if (fresh && old) old.innerHTML = fresh.innerHTML;
      });
    }).finally(function () { refreshing = false; });
  }

  function handle(msg) {
    dv.messages += 1;
    var jobs = msg.jobs || (msg.job ? [msg.job] : []);
    jobs.forEach(function (job) {
      dv.seen.push([job.id, Number(job.progress), job.status, Date.now(), msg.type]);
      updateJobRow(job);
      updateJobPage(job);
      refreshComparison(job);
    });
    document.dispatchEvent(new CustomEvent("deltavault:job", { detail: msg }));
  }

  function connect(path) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var delay = 500;
    var indicator = qs(".live");
    (function open() {
      var ws = new WebSocket(scheme + location.host + path);
      ws.onopen = function () { delay = 500; dv.connected = true; if (indicator) { indicator.classList.add("on"); indicator.textContent = "live"; } };
      ws.onmessage = function (ev) { try { handle(JSON.parse(ev.data)); } catch (e) { console.error(e); } };
      ws.onclose = function (ev) {
        dv.connected = false;
        (dv.closeCodes = dv.closeCodes || []).push(ev.code);  // what closed each socket, for diagnosis
        if (REFUSED[ev.code]) {   // permanent (4401 not logged in, 4403 access withdrawn, 4404 not found): stop
          dv.refused = ev.code;
          if (indicator) { indicator.classList.remove("on"); indicator.textContent = REFUSED[ev.code]; }
          return;
        }
        dv.reconnects = (dv.reconnects || 0) + 1;
        if (indicator) { indicator.classList.remove("on"); indicator.textContent = "offline"; }
        setTimeout(open, delay); delay = Math.min(delay * 2, 10000);
      };
    })();
  }

  // Job form: show the inputs of the chosen kind, and only the options of the chosen codec.
  function codecOptions() {
    var select = qs("select[name=codec]");
    var kind = qs("select[name=kind]");
    if (!select || !kind) return;
    function sync() {
      qsa("[data-kinds]").forEach(function (el) {
        var on = el.getAttribute("data-kinds").split(" ").indexOf(kind.value) >= 0;
        if (on && el.hasAttribute("data-codec")) on = el.getAttribute("data-codec") === select.value;
        el.hidden = !on;
        qsa("input,select,textarea", el).forEach(function (input) { input.disabled = !on; });
      });
    }
    select.addEventListener("change", sync); kind.addEventListener("change", sync); sync();
  }

  // Forms marked data-confirm="question" ask before they submit (delete, cancel, replace or revoke a token).
  function confirmations() {
    document.addEventListener("submit", function (ev) {
      var form = ev.target.closest ? ev.target.closest("form[data-confirm]") : null;
      if (form && !window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
    }, true);
  }

  document.addEventListener("DOMContentLoaded", function () {
    confirmations();
    codecOptions();
    var path = document.body.getAttribute("data-ws");
    if (path && "WebSocket" in window) connect(path);
  });
})();
