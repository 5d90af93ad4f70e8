// Progressive enhancement only: every control also works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Links that open a dialog (fallback: the same page rendered with the dialog open).
  document.querySelectorAll("[data-dialog]").forEach(function (opener) {
    opener.addEventListener("click", function (ev) {
      var dlg = document.getElementById(opener.getAttribute("data-dialog"));
      if (!dlg || typeof dlg.showModal !== "function") return;
      ev.preventDefault();
      document.querySelectorAll("dialog[open]").forEach(function (d) { d.close(); });
      dlg.showModal();
      var first = dlg.querySelector("input:not([type=hidden]), select, textarea, button, a[href]");
      if (first) first.focus();
    });
    opener.addEventListener("keydown", function (ev) {
      if (ev.key === " ") { ev.preventDefault(); opener.click(); }  // role=button: Space too
    });
  });
  document.querySelectorAll("dialog [data-close]").forEach(function (btn) {
    btn.addEventListener("click", function (ev) {
      var dlg = btn.closest("dialog");
      if (dlg && dlg.open && !dlg.hasAttribute("data-open")) { ev.preventDefault(); dlg.close(); }
    });
  });
  // A dialog the server rendered open (an error to show) becomes modal, focus inside it.
  document.querySelectorAll("dialog[data-open]").forEach(function (dlg) {
    if (typeof dlg.showModal !== "function") return;
    dlg.close();
    dlg.showModal();
    var alert = dlg.querySelector("[role=alert]");
    var first = dlg.querySelector("input:not([type=hidden]), select, textarea");
    if (first) first.focus();
    if (alert) alert.setAttribute("tabindex", "-1");
  });
  document.querySelectorAll("[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });
  document.querySelectorAll(".js-hide").forEach(function (el) { el.hidden = true; });
});
