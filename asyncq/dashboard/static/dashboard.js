// asyncq dashboard: relative times, live fragments over server-sent events,
// confirmation dialogs, selection and keyboard shortcuts. No dependencies.
(function () {
  "use strict";

  function span(seconds) {
    seconds = Math.abs(seconds);
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return (seconds >= 10 ? Math.round(seconds) : seconds.toFixed(1)) + " s";
    var minutes = Math.floor(seconds / 60), sec = Math.floor(seconds % 60);
    if (minutes < 60) return minutes < 10 && sec ? minutes + " min " + sec + " s" : minutes + " min";
    var hours = Math.floor(minutes / 60); minutes = minutes % 60;
    if (hours < 24) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    var days = Math.floor(hours / 24); hours = hours % 24;
    return hours ? days + " d " + hours + " h" : days + " d";
  }

  function refreshTimes(root) {
    var now = Date.now() / 1000;
    (root || document).querySelectorAll("time[data-ts]").forEach(function (el) {
      var delta = now - parseFloat(el.dataset.ts);
      el.textContent = Math.abs(delta) < 1 ? "just now" : delta > 0 ? span(delta) + " ago" : "in " + span(delta);
    });
  }

  // -- live fragments ---------------------------------------------------------------
  function replace(id, html) {
    var target = document.getElementById(id);
    if (!target) return;
    var open = {};
    target.querySelectorAll("details[data-key]").forEach(function (d) { open[d.dataset.key] = d.open; });
    var focused = document.activeElement && target.contains(document.activeElement) ? document.activeElement.id : null;
    target.innerHTML = html;
    target.querySelectorAll("details[data-key]").forEach(function (d) {
      if (d.dataset.key in open) d.open = open[d.dataset.key];
    });
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
    refreshTimes(target);
    bindForms(target);
  }

  function live() {
    var url = document.body.dataset.live;
    var dot = document.getElementById("live-status");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    if (dot) dot.hidden = false;
    source.addEventListener("update", function (event) {
      var parts = JSON.parse(event.data);
      Object.keys(parts).forEach(function (id) { replace(id, parts[id]); });
      document.body.dataset.updates = String((parseInt(document.body.dataset.updates || "0", 10) + 1));
    });
    source.onopen = function () { if (dot) { dot.classList.add("on"); dot.title = "Live: updates as jobs change"; } };
    source.onerror = function () { if (dot) { dot.classList.remove("on"); dot.title = "Reconnecting…"; } };
  }

  // -- confirmations and selections ----------------------------------------------------
  var dialog, pending;
  function bindForms(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (form.querySelector("input[name=confirm]")) return;
        event.preventDefault();
        if (!dialog || !dialog.showModal) { if (window.confirm(form.dataset.confirm)) confirmAndSend(form); return; }
        pending = form;
        document.getElementById("confirm-message").textContent = form.dataset.confirm;
        dialog.returnValue = "";
        dialog.showModal();
        document.getElementById("confirm-ok").focus();
      });
    });
  }
  function confirmAndSend(form) {
    var input = document.createElement("input");
    input.type = "hidden"; input.name = "confirm"; input.value = "yes";
    form.appendChild(input);
    form.submit();
  }

  function selection() {
    var all = document.querySelector("[data-select-all]");
    var button = document.querySelector("[data-selection-button]");
    var boxes = function () { return document.querySelectorAll("input[name=job][form=selected]"); };
    var update = function () {
      var n = Array.prototype.filter.call(boxes(), function (b) { return b.checked; }).length;
      if (button) { button.disabled = n === 0; button.textContent = n ? "Retry selected (" + n + ")" : "Retry selected"; }
    };
    if (all) all.addEventListener("change", function () { boxes().forEach(function (b) { b.checked = all.checked; }); update(); });
    document.addEventListener("change", function (e) { if (e.target.matches && e.target.matches("input[name=job]")) update(); });
    update();
  }

  // -- keyboard -------------------------------------------------------------------------
  function keys() {
    var armed = false;
    document.addEventListener("keydown", function (event) {
      var t = event.target;
      if (event.metaKey || event.ctrlKey || event.altKey || (t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName)))) return;
      if (event.key === "/") {
        var filter = document.querySelector("[data-filter]");
        if (filter) { event.preventDefault(); filter.focus(); }
        return;
      }
      if (armed) {
        armed = false;
        var link = document.querySelector(".top nav a[data-key='" + event.key + "']");
        if (link) { event.preventDefault(); link.click(); }
        return;
      }
      if (event.key === "g") armed = true;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    dialog = document.getElementById("confirm");
    if (dialog) dialog.addEventListener("close", function () {
      if (dialog.returnValue === "ok" && pending) confirmAndSend(pending);
      pending = null;
    });
    refreshTimes();
    setInterval(refreshTimes, 10000);
    bindForms(document);
    selection();
    keys();
    live();
  });
})();
