/* hostward console behaviour: plain JavaScript, no framework, no build step.
   Every form still posts normally; this file only adds dialogs, confirmations and conveniences. */
(function () {
  "use strict";

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // Selects inside [data-autosubmit] forms submit the form when changed (region selector, page size).
  $$("form[data-autosubmit]").forEach(function (form) {
    $$("select", form).forEach(function (sel) {
      sel.addEventListener("change", function () { form.submit(); });
    });
  });

  $$("[data-dismiss]").forEach(function (btn) {
    btn.addEventListener("click", function () { btn.parentElement.remove(); });
  });
  $$("[data-back]").forEach(function (btn) {
    btn.addEventListener("click", function () { history.back(); });
  });

  // Forms (or buttons) with data-confirm ask before submitting.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var submitter = ev.submitter;
    var message = (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { ev.preventDefault(); }
  });

  // Check-all boxes and batch buttons that need a selection.
  function refreshSelection(group) {
    var boxes = $$('input[data-check="' + group + '"]');
    var n = boxes.filter(function (b) { return b.checked; }).length;
    $$('[data-needs-selection="' + group + '"]').forEach(function (el) { el.disabled = n === 0; });
    $$('[data-selection-count="' + group + '"]').forEach(function (el) { el.textContent = n ? n + " selected" : ""; });
    var all = $('input[data-check-all="' + group + '"]');
    if (all) { all.checked = n > 0 && n === boxes.length; all.indeterminate = n > 0 && n < boxes.length; }
  }
  $$("input[data-check-all]").forEach(function (all) {
    var group = all.getAttribute("data-check-all");
    all.addEventListener("change", function () {
      $$('input[data-check="' + group + '"]').forEach(function (b) { b.checked = all.checked; });
      refreshSelection(group);
    });
    refreshSelection(group);
  });
  $$("input[data-check]").forEach(function (box) {
    box.addEventListener("change", function () { refreshSelection(box.getAttribute("data-check")); });
  });

  // Buttons with data-open="dialog-id" open a <dialog>; [data-close] buttons close it.
  $$("[data-open]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var dlg = document.getElementById(btn.getAttribute("data-open"));
      if (dlg && dlg.showModal) { dlg.showModal(); }
    });
  });
  $$("dialog [data-close]").forEach(function (btn) {
    btn.addEventListener("click", function () { btn.closest("dialog").close(); });
  });

  // ---- Enable protection dialog (Servers tab) -------------------------------------------------------
  var enableDlg = document.getElementById("enable-dialog");
  if (enableDlg) {
    var idle = JSON.parse(enableDlg.getAttribute("data-idle") || "{}");
    var form = $("form", enableDlg);
    var targets = $(".dlg-targets", enableDlg);
    var ids = $(".dlg-ids", enableDlg);
    var confirmBtn = $("button[type=submit]", enableDlg);
    var noneMsg = $(".dlg-none", enableDlg);

    var openEnable = function (servers) {
      ids.innerHTML = "";
      var regions = {};
      servers.forEach(function (s) {
        var input = document.createElement("input");
        input.type = "hidden"; input.name = "server_ids"; input.value = s.id;
        ids.appendChild(input);
        regions[s.region] = true;
      });
      targets.textContent = servers.length === 1
        ? servers[0].name + " (region " + servers[0].region + ")"
        : servers.length + " servers (region " + Object.keys(regions).join(", ") + ")";
      var firstFree = null;
      $$("input[name=edition]", enableDlg).forEach(function (radio) {
        var total = 0;
        Object.keys(regions).forEach(function (r) { total += ((idle[r] || {})[radio.value] || 0); });
        var label = radio.closest("label");
        $(".idle b", label).textContent = String(total);
        radio.disabled = total === 0;
        label.classList.toggle("none", total === 0);
        radio.checked = false;
        if (total > 0 && firstFree === null) { firstFree = radio; }
      });
      if (firstFree) { firstFree.checked = true; }
      confirmBtn.disabled = firstFree === null;
      noneMsg.hidden = firstFree !== null;
      enableDlg.showModal();
    };

    $$("[data-enable]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        openEnable([{ id: btn.getAttribute("data-server-id"), name: btn.getAttribute("data-server-name"),
                      region: btn.getAttribute("data-region") }]);
      });
    });
    $$("[data-enable-selected]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var group = btn.getAttribute("data-enable-selected");
        var chosen = $$('input[data-check="' + group + '"]').filter(function (b) { return b.checked; });
        if (!chosen.length) { return; }
        openEnable(chosen.map(function (b) {
          return { id: b.value, name: b.getAttribute("data-name"), region: b.getAttribute("data-region") };
        }));
      });
    });
    $$("input[name=edition]", enableDlg).forEach(function (radio) {
      radio.addEventListener("change", function () { confirmBtn.disabled = false; });
    });
    form.addEventListener("submit", function () { confirmBtn.disabled = true; confirmBtn.textContent = "Enabling…"; });
  }

  // Pages showing running work (scan progress) refresh themselves while nobody is typing.
  var refresh = document.body.getAttribute("data-refresh");
  if (refresh) {
    var tick = function () {
      var busy = document.activeElement && /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
      var open = $("dialog[open]") || $("details.user-menu[open]");
      if (busy || open) { setTimeout(tick, 2000); } else { location.reload(); }
    };
    setTimeout(tick, parseInt(refresh, 10) * 1000);
  }

  // Copy buttons next to commands.
  $$("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.getAttribute("data-copy"));
      if (!el) { return; }
      var text = el.textContent;
      var done = function () { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done); }
      else {
        var range = document.createRange(); range.selectNodeContents(el);
        var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
        try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected for manual copy */ }
      }
    });
  });
})();
