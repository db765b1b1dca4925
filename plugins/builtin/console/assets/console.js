// The console's only script: keeps the open view live over Server-Sent Events (no polling). The
// view's container names its event stream in data-events; each push replaces the container's HTML.
(function () {
  "use strict";
  var view = document.querySelector("[data-events]");
  var live = document.getElementById("live");
  if (!view || !window.EventSource) { return; }
  var es = new EventSource(view.getAttribute("data-events"));
  es.addEventListener("view", function (e) {
    view.innerHTML = JSON.parse(e.data);
    view.setAttribute("data-updated", String(Date.now()));
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
