// The first-run tour, step by step: Next/Previous tip, Escape hides it for this visit, Dismiss hides it for
// good (saved through the API; without JavaScript the same button posts a form and the tour is a plain list).
(function () {
  "use strict";

  function csrfToken(root) {
    var input = root.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function setUp(tour) {
    var steps = Array.prototype.slice.call(tour.querySelectorAll("[data-tour-step]"));
    var back = tour.querySelector("[data-tour-back]");
    var next = tour.querySelector("[data-tour-next]");
    var position = tour.querySelector("[data-tour-position]");
    var form = tour.querySelector("[data-tour-dismiss-form]");
    var hiddenKey = "portal-tour-hidden-" + tour.dataset.tourRole;
    var current = 0;

    try {
      if (window.sessionStorage.getItem(hiddenKey)) { tour.hidden = true; return; }
    } catch (e) { /* storage blocked: show it */ }

    function show(index, focusStep) {
      current = Math.max(0, Math.min(index, steps.length - 1));
      steps.forEach(function (step, i) { step.hidden = i !== current; });
      back.hidden = current === 0;
      next.hidden = current === steps.length - 1;
      tour.dataset.tourCurrent = String(current + 1);
      position.textContent = "Tip " + (current + 1) + " of " + steps.length;
      if (focusStep) {
        // Keep keyboard users on a visible control: the button they pressed, or the step if it went away.
        var active = document.activeElement;
        if (!active || active.hidden || !tour.contains(active)) { steps[current].focus(); }
      }
    }

    function close() {
      tour.hidden = true;
      var main = document.getElementById("main");
      if (main) { main.focus(); }
    }

    tour.classList.add("tour-enhanced");
    tour.querySelector("[data-tour-keys]").hidden = false;
    back.addEventListener("click", function () { show(current - 1, true); });
    next.addEventListener("click", function () { show(current + 1, true); });
    tour.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        try { window.sessionStorage.setItem(hiddenKey, "1"); } catch (e) { /* nothing to remember it in */ }
        close();
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      fetch(tour.dataset.tourApi, {
        method: "POST", credentials: "same-origin",
        headers: {"X-CSRFToken": csrfToken(form), "Accept": "application/json"}
      }).then(function (response) {
        if (!response.ok) { throw new Error("dismiss failed"); }
        tour.dataset.tourDismissed = "true";
        close();
      }).catch(function () { form.submit(); });
    });
    show(0, false);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var tour = document.getElementById("tour");
    if (tour) { setUp(tour); }
  });
})();
