// An offline API reference: every operation in /openapi.json with its parameters, body and responses.
"use strict";

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function describe(spec, schema, depth = 0) {
  schema = resolve(spec, schema);
  if (depth > 4) return "…";
  if (schema.anyOf) return schema.anyOf.map((s) => describe(spec, s, depth + 1)).join(" | ");
  if (schema.type === "array") return `[${describe(spec, schema.items, depth + 1)}]`;
  if (schema.type === "object" || schema.properties) {
    const props = Object.entries(schema.properties || {}).map(([k, v]) => `${k}: ${describe(spec, v, depth + 1)}`);
    return props.length ? `{${props.join(", ")}}` : "object";
  }
  return schema.format === "binary" ? "file" : schema.type || "any";
}

function operation(spec, path, method, op) {
  const box = el("section", { className: "op" },
    el("h2", {}, el("span", { className: `method ${method}` }, method.toUpperCase()), path),
    el("p", {}, op.summary || ""));
  if (op.parameters && op.parameters.length) {
    const rows = op.parameters.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
      el("td", {}, describe(spec, p.schema)), el("td", {}, p.schema?.description || p.description || "")));
    box.append(el("h3", {}, "Parameters"), el("table", {}, ...rows));
  }
  if (op.requestBody) {
    box.append(el("h3", {}, "Body"));
    for (const [type, media] of Object.entries(op.requestBody.content)) {
      box.append(el("pre", {}, `${type}: ${describe(spec, media.schema)}`));
    }
  }
  box.append(el("h3", {}, "Responses"));
  const rows = Object.entries(op.responses).map(([status, r]) => {
    // JSON goes without saying; any other media type (Prometheus text) is named
    const bodies = Object.entries(r.content || {}).map(([type, media]) =>
      (type === "application/json" ? "" : `${type}: `) + describe(spec, media.schema));
    return el("tr", {}, el("td", {}, status), el("td", {}, r.description || ""),
      el("td", {}, el("code", {}, bodies.join(" | "))));
  });
  box.append(el("table", {}, ...rows));
  return box;
}

async function main() {
  const root = document.getElementById("api");
  try {
    const spec = await (await fetch("/openapi.json")).json();
    root.replaceChildren(el("p", {}, spec.info.description || ""));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) root.append(operation(spec, path, method, op));
    }
  } catch (err) {
    root.replaceChildren(el("p", {}, "Cannot load /openapi.json: " + err.message));
  }
}

main();
