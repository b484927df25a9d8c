// What the signed-in key may do (from /v1/me): the console shows only those controls, so a
// key never meets a button that can only fail.
let granted = new Set();
let serverAttributes = false;

export function setGrant(me) {
  granted = new Set(me ? me.scopes : []);
  serverAttributes = Boolean(me && me.attributes);
  applyScopes();
}

// can("enrol identify"): the key holds one of the scopes (admin holds them all).
export const can = (needs) => granted.has("admin") || needs.split(" ").some((s) => granted.has(s));

// Age and sex: the server must allow them and the key must hold detect.
export const canAttributes = () => serverAttributes && can("detect");

// Every element with data-needs="scope scope…" is shown only to keys holding one of them.
export function applyScopes(root = document) {
  for (const node of root.querySelectorAll("[data-needs]")) {
    node.hidden = !can(node.dataset.needs);
  }
  const attributes = document.querySelector("#try-attributes");
  if (attributes) {
    attributes.checked = attributes.checked && canAttributes();
    for (const node of document.querySelectorAll(".needs-attributes")) {
      node.hidden = !canAttributes();
    }
  }
}
