(function () {
  "use strict";
  var dataBlock = document.getElementById("checkout-data");
  if (!dataBlock || !window.JSON) { return; }
  var data = JSON.parse(dataBlock.textContent);
  var texts = data.messages;
  var state = data.state;
  var skew = 0;
  var timer = null;
  var redirecting = false;

  function has(object, key) { return Object.prototype.hasOwnProperty.call(object, key); }
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (whole, name) {
      return has(values, name) && values[name] !== null ? String(values[name]) : whole;
    });
  }
  function text(key) { return fill(texts[key] || "", state); }
  function each(selector, fn) { Array.prototype.forEach.call(document.querySelectorAll(selector), fn); }
  function two(n) { return (n < 10 ? "0" : "") + n; }

  function countdown() {
    var left = state.expires_at === null ? null : state.expires_at - (Date.now() + skew);
    each("[data-countdown]", function (el) {
      if (left === null) { return; }
      if (left <= 0) { el.textContent = texts["expires.now"]; return; }
      var s = Math.floor(left / 1000), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
      el.textContent = (h > 0 ? h + ":" + two(m) : String(m)) + ":" + two(s % 60);
    });
  }

  function apply(next) {
    var viewChanged = next.view !== state.view;
    state = next;
    skew = next.now - Date.now();
    each("[data-views]", function (el) {
      el.hidden = el.getAttribute("data-views").split(" ").indexOf(next.view) < 0;
    });
    each("[data-value]", function (el) { el.textContent = String(next[el.getAttribute("data-value")]); });
    each("[data-uri]", function (el) { el.setAttribute("href", next.uri); });
    each("[data-qr]", function (el) {
      if (next.qr) { el.setAttribute("src", next.qr); el.setAttribute("alt", text("qr.alt")); }
    });
    if (viewChanged) {
      document.getElementById("status").setAttribute("data-tone", data.tones[next.view]);
      document.getElementById("status-title").textContent = text("view." + next.view + ".title");
      document.getElementById("status-text").textContent = text("view." + next.view + ".text");
      document.title = text("view." + next.view + ".title") + " · " + text("page.title");
    }
    if (timer === null && next.expires_at !== null) { timer = window.setInterval(countdown, 1000); }
    countdown();
    if (data.redirect && data.redirect_views.indexOf(next.view) >= 0 && !redirecting) {
      redirecting = true;
      window.setTimeout(function () { window.location.assign(data.redirect); }, data.redirect_after * 1000);
    }
  }

  each("button[data-copy]", function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var note = button.parentNode.querySelector(".copied");
      var value = String(state[button.getAttribute("data-copy")]);
      function say(key) {
        note.textContent = texts[key];
        window.setTimeout(function () { note.textContent = ""; }, 3000);
      }
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(value).then(function () { say("copy.done"); }, function () { say("copy.failed"); });
      } else {
        say("copy.failed");
      }
    });
  });

  apply(state);
  if (window.EventSource) {
    var live = document.getElementById("live");
    var source = new window.EventSource(data.events);
    source.addEventListener("state", function (event) {
      live.hidden = true;
      apply(JSON.parse(event.data));
      if (data.closed_views.indexOf(state.view) >= 0) { source.close(); }
    });
    source.addEventListener("open", function () { live.hidden = true; });
    source.addEventListener("error", function () {
      if (source.readyState !== 2) { live.hidden = false; }
    });
  }
}());
