// The console's only script: keeps the fleet table live over Server-Sent Events (no polling).
(function () {
  "use strict";
  var fleet = document.getElementById("fleet");
  var live = document.getElementById("live");
  if (!fleet || !window.EventSource) { return; }
  var es = new EventSource("events" + window.location.search);
  es.addEventListener("fleet", function (e) {
    fleet.innerHTML = JSON.parse(e.data);
    fleet.setAttribute("data-updated", String(Date.now()));
    live.textContent = "live";
    live.className = "";
  });
  es.addEventListener("session", function () {
    // the session ended (token expired or revoked): back to the login page
    es.close();
    window.location.assign("login");
  });
  es.onerror = function () {
    if (es.readyState === EventSource.CLOSED) {
      // refused (the session is no longer valid): the browser does not retry; log in again
      window.location.assign("login");
      return;
    }
    live.textContent = "reconnecting…"; // the browser retries by itself
    live.className = "down";
  };
})();
