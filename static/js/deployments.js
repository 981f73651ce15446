// Deployment pages: copy buttons, confirmations, the "Try it" form (a fetch to the invocations endpoint with
// the session and CSRF header), and the deploy form's name and target following the chosen environment.
(function () {
  "use strict";

  function announce(text) {
    var status = document.getElementById("copy-status");
    if (status) { status.textContent = text; }
  }

  function copyText(text, button) {
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      announce("Copied to the clipboard.");
      window.setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else {
      fallbackCopy(text);
      done();
    }
  }

  function fallbackCopy(text) {
    // Plain-HTTP intranets have no Clipboard API: copy through a hidden, selected textarea.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* the text stays selectable */ }
    document.body.removeChild(area);
  }

  function setupCopy() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var source = document.querySelector(button.dataset.copy);
        if (!source) { return; }
        copyText(source.value !== undefined && source.tagName === "INPUT" ? source.value : source.textContent, button);
      });
    });
  }

  function setupConfirm() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
      });
    });
  }

  function setupTry() {
    var form = document.getElementById("try-form");
    if (!form) { return; }
    var result = document.getElementById("try-result");
    var button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      button.textContent = "Sending…";
      var show = function (status, requestId, body) {
        result.hidden = false;
        result.querySelector("[data-try-status]").textContent = status;
        result.querySelector("[data-try-request-id]").textContent = requestId || "—";
        result.querySelector("[data-try-body]").textContent = body;
        result.dataset.status = String(status).split(" ")[0];
        button.disabled = false;
        button.textContent = "Send";
      };
      fetch(form.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": form.dataset.csrf },
        body: form.querySelector("textarea").value
      }).then(function (response) {
        return response.text().then(function (text) {
          var pretty = text;
          try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: shown as is */ }
          show(response.status + " " + response.statusText, response.headers.get("X-Request-ID"), pretty);
        });
      }).catch(function (error) {
        show("no answer", "", "The request did not reach the server: " + error);
      });
    });
  }

  function setupDeployForm() {
    var form = document.getElementById("deploy-form");
    if (!form) { return; }
    var name = form.querySelector("[name=name]");
    var target = form.querySelector("[name=target]");
    var edited = false;
    if (name) { name.addEventListener("input", function () { edited = true; }); }

    function sync() {
      var chosen = form.querySelector("[name=environment]:checked");
      if (!chosen) { return; }
      if (name && !edited && chosen.dataset.deploymentName) { name.value = chosen.dataset.deploymentName; }
      if (target) {
        Array.prototype.forEach.call(target.options, function (option) {
          var other = option.dataset.targetEnvironment && option.dataset.targetEnvironment !== chosen.value;
          option.hidden = !!other;
          option.disabled = !!other;
          if (other && option.selected) { target.value = "new"; }
        });
      }
      var isNew = !target || target.value === "new";
      form.querySelectorAll("[data-for-target]").forEach(function (part) {
        part.hidden = (part.dataset.forTarget === "new") !== isNew;
      });
    }
    form.querySelectorAll("[name=environment]").forEach(function (radio) { radio.addEventListener("change", sync); });
    if (target) { target.addEventListener("change", sync); }
    sync();
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupCopy();
    setupConfirm();
    setupTry();
    setupDeployForm();
  });
})();
