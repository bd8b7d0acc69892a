// Small helpers: `/` focuses search, selects that submit their form, the admin's time zone, the chart.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    var tag = (document.activeElement && document.activeElement.tagName) || "";
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(tag)) return;
    var search = document.querySelector("[data-search]");
    if (search) { event.preventDefault(); search.focus(); search.select(); }
  });
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });
  // The first visit remembers the browser's time zone, so times read in the admin's own zone.
  if (!/(?:^|; )ui_tz=/.test(document.cookie)) {
    try {
      var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (zone) {
        document.cookie = "ui_tz=" + encodeURIComponent(zone) + "; path=/ui; max-age=31536000; samesite=lax";
        if (zone !== "UTC") location.reload();
      }
    } catch (e) { /* keep UTC */ }
  }
  // htmx: a form's 422 (its fields' errors) is swapped in like a success.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr && event.detail.xhr.status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  // The import form's upload progress (htmx's XHR progress events).
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest && event.target.closest("[data-upload]");
    if (!form || !event.detail.lengthComputable) return;
    var box = form.querySelector(".upload-progress"), bar = form.querySelector("progress");
    var percent = Math.round((event.detail.loaded * 100) / event.detail.total);
    box.hidden = false;
    bar.value = percent;
    form.querySelector("[data-upload-percent]").textContent = percent + "%";
  });
  function drawChart() {
    var box = document.getElementById("rate-chart");
    if (!box || !window.uPlot) return;
    var style = getComputedStyle(document.documentElement);
    var ok = style.getPropertyValue("--ok").trim(), bad = style.getPropertyValue("--bad").trim();
    var axis = { stroke: style.getPropertyValue("--muted").trim(), grid: { stroke: style.getPropertyValue("--line").trim() } };
    // Times in the page's language and the admin's zone (uPlot's own labels are English).
    var clock = new Intl.DateTimeFormat(document.documentElement.lang || undefined,
      { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: box.dataset.tz || undefined });
    function hhmm(seconds) { return seconds == null ? "--" : clock.format(new Date(seconds * 1000)); }
    var xAxis = Object.assign({}, axis, { values: function (u, splits) { return splits.map(hhmm); } });
    var plot = null;
    function load() {
      fetch(box.dataset.src, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (d) {
        var data = [d.t, d.sent, d.failed];
        if (plot) { plot.setData(data); return; }
        plot = new uPlot({
          width: box.clientWidth || 600, height: 220,
          series: [{ label: box.dataset.time, value: function (u, v) { return hhmm(v); } },
            { label: box.dataset.sent, stroke: ok, width: 2 }, { label: box.dataset.failed, stroke: bad, width: 2 }],
          axes: [xAxis, axis],
        }, data, box);
      }).catch(function () {});
    }
    load();
    setInterval(load, 10000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawChart); else drawChart();
})();
