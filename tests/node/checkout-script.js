// Runs the checkout page's inline script (dashpay/api/checkout/assets/checkout.js)
// against a minimal DOM made of the page's own elements, feeds it live events, and
// prints what the page then shows. Read by tests/unit/test_checkout_script.py.
//
// stdin: {"script", "data", "elements": [{"tag", "attrs"}], "events": [data, ...]}
"use strict";
const vm = require("vm");

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const timeouts = [];
const assigned = [];
let source = null;

function makeElement(tag, attrs) {
  const el = {
    tag, attrs: Object.assign({}, attrs), hidden: "hidden" in attrs, textContent: "",
    listeners: {}, parentNode: null,
    getAttribute(name) { return name in this.attrs ? this.attrs[name] : null; },
    setAttribute(name, value) { this.attrs[name] = String(value); },
    addEventListener(type, fn) { this.listeners[type] = fn; },
  };
  return el;
}

const elements = input.elements.map((e) => makeElement(e.tag, e.attrs));
// Each copy button's parent holds its ".copied" note, as in the page.
elements.forEach((el) => {
  if (el.tag === "button") {
    const note = makeElement("span", { class: "copied" });
    el.parentNode = { querySelector: () => note };
    el.note = note;
  }
});

function matches(el, selector) {
  const m = /^([a-z]*)\[([a-z-]+)\]$/.exec(selector);
  if (!m) { throw new Error("selector not supported by the test DOM: " + selector); }
  return (!m[1] || el.tag === m[1]) && m[2] in el.attrs;
}

const document = {
  title: "",
  getElementById(id) {
    if (id === "checkout-data") { return { textContent: input.data }; }
    return elements.find((el) => el.attrs.id === id) || null;
  },
  querySelectorAll(selector) { return elements.filter((el) => matches(el, selector)); },
};

class EventSource {
  constructor(url) { this.url = url; this.readyState = 1; this.listeners = {}; source = this; }
  addEventListener(type, fn) { this.listeners[type] = fn; }
  close() { this.readyState = 2; this.closed = true; }
}

const window = {
  JSON, EventSource,
  setTimeout(fn, ms) { timeouts.push({ fn, ms }); return timeouts.length; },
  setInterval() { return 1; },
  location: { assign(url) { assigned.push(url); } },
};
const context = { window, document, navigator: {}, JSON, Date, Math, String, Array, Object };
vm.runInNewContext(input.script, context);

for (const data of input.events) {
  source.listeners.state({ data });
}
const redirectTimers = timeouts.filter((t) => t.ms >= 1000);
redirectTimers.forEach((t) => t.fn());

process.stdout.write(JSON.stringify({
  title: document.title,
  events_url: source && source.url,
  closed: Boolean(source && source.closed),
  assigned,
  redirect_after_ms: redirectTimers.map((t) => t.ms),
  elements: elements.map((el) => ({
    tag: el.tag, attrs: el.attrs, hidden: el.hidden, text: el.textContent,
  })),
}));
