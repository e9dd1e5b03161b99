// The check-in page: render the embedded Questionnaire with LHC-Forms, refuse to submit while
// required answers are missing, send the answers (and nothing else) to this same path.
(function () {
  "use strict";
  var questionnaire = JSON.parse(document.getElementById("questionnaire").textContent);
  var container = document.getElementById("form");
  var button = document.getElementById("submit");
  var message = document.getElementById("message");
  // No keyed score beside an answer's text: the client must not see the keying.
  var options = {
    displayScoreWithAnswerText: false,
    hideTreeLine: true,
    hideIndentation: true,
    prepopulate: false
  };

  function say(text, ok) {
    message.textContent = text;
    message.className = ok ? "message ok" : "message";
  }

  LForms.Util.addFormToPage(questionnaire, container, options).then(function () {
    container.setAttribute("aria-busy", "false");
    button.disabled = false;
    document.body.setAttribute("data-ready", "true");
  }, function () {
    say("The form could not be shown. Please tell the front desk.");
  });

  button.addEventListener("click", function () {
    var errors = LForms.Util.checkValidity(container);
    if (errors && errors.length) {
      say("Please answer every question before submitting (" + errors.length +
          (errors.length === 1 ? " answer is" : " answers are") + " missing).");
      document.body.setAttribute("data-blocked", String(errors.length));
      return;
    }
    var response = LForms.Util.getFormFHIRData("QuestionnaireResponse", "R4", container);
    button.disabled = true;
    say("Sending...", true);
    fetch(window.location.pathname, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item: (response && response.item) || [] }),
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (answer) {
      return answer.json().catch(function () { return {}; }).then(function (body) {
        document.body.setAttribute("data-status", String(answer.status));
        if (answer.ok) {
          document.body.className = "done";
          say(body.message || "Thank you!", true);
          return;
        }
        say(body.message || "Your answers could not be sent. Please try again.");
        button.disabled = answer.status !== 422 && answer.status !== 503;
      });
    }, function () {
      document.body.setAttribute("data-status", "network");
      say("Your answers could not be sent. Please check the connection and try again.");
      button.disabled = false;
    });
  });
})();
