// Live refresh without a build step: while the page shows running jobs (data-live on
// #live), fetch the same URL every few seconds and swap in the new #live content.
(function () {
  "use strict";
  function schedule(el) {
    var seconds = parseFloat(el.dataset.live);
    if (!seconds) { return; }
    setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return schedule(el); }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
          var active = document.activeElement;
          // Don't replace a form the user is typing in; try again next time.
          if (!fresh || (active && el.contains(active) && active.tagName === "INPUT")) {
            return schedule(el);
          }
          el.replaceChildren.apply(el, Array.prototype.slice.call(fresh.childNodes));
          el.dataset.live = fresh.dataset.live;
          schedule(el);
        })
        .catch(function () { schedule(el); });
    }, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("live");
    if (el) { schedule(el); }
  });
})();
