// Upload forms: drag-and-drop onto the file field, and a progress bar while the file uploads (htmx
// sends the form and reports progress). Without JavaScript the form still posts normally.
(function () {
  "use strict";

  function setup(form) {
    var zone = form.querySelector("[data-drop-zone]");
    var input = form.querySelector("input[type=file]");
    if (zone && input && !zone.dataset.ready) {
      zone.dataset.ready = "1";
      ["dragenter", "dragover"].forEach(function (name) {
        zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("is-dragging"); });
      });
      ["dragleave", "drop"].forEach(function (name) {
        zone.addEventListener(name, function () { zone.classList.remove("is-dragging"); });
      });
      zone.addEventListener("drop", function (event) {
        event.preventDefault();
        if (event.dataTransfer && event.dataTransfer.files.length) { input.files = event.dataTransfer.files; }
      });
    }
  }

  function progressParts(form) {
    return {
      box: form.querySelector("[data-upload-progress]"),
      bar: form.querySelector("[data-upload-progress] progress"),
      text: form.querySelector("[data-upload-progress-text]")
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-upload-form]").forEach(setup);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    event.target.querySelectorAll && event.target.querySelectorAll("[data-upload-form]").forEach(setup);
    if (event.target.matches && event.target.matches("[data-upload-form]")) { setup(event.target); }
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.target.closest && event.target.closest("[data-upload-form]");
    if (!form) { return; }
    var parts = progressParts(form);
    if (parts.box) { parts.box.hidden = false; }
    form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
  });
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest && event.target.closest("[data-upload-form]");
    if (!form || !event.detail.lengthComputable) { return; }
    var parts = progressParts(form);
    var percent = Math.round(100 * event.detail.loaded / event.detail.total);
    if (parts.bar) { parts.bar.value = percent; parts.bar.textContent = percent + "%"; }
    if (parts.text) {
      parts.text.textContent = percent < 100 ? percent + "% uploaded" : "Uploaded; checking the file…";
    }
  });
  document.addEventListener("htmx:responseError", function (event) {
    // htmx does not swap error responses; show the server's message (e.g. over the size limit) instead.
    var form = event.target.closest && event.target.closest("[data-upload-form]");
    if (!form) { return; }
    var parts = progressParts(form);
    if (parts.text) { parts.text.textContent = event.detail.xhr.responseText || "The upload failed."; }
    if (parts.text) { parts.text.classList.add("text-danger"); }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.target.closest && event.target.closest("[data-upload-form]");
    if (form) { form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = false; }); }
  });
})();
