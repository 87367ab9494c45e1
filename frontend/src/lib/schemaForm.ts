// A tool version's configuration contract (JSON Schema, draft 2020-12) turned into a form
// model, the form's raw values turned back into a configuration object, and client-side
// checks of the schema keywords the form understands. The server validates again with a
// full JSON Schema validator; its field violations ("run.config.epochs" from CreateRun,
// "config.epochs" from UpdateDevConfig, "run.config.percentiles[1]" for an item) map back
// to form fields with `violationTarget`.

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export type Primitive = "string" | "number" | "integer" | "boolean";
/** How a field is edited: one input per primitive, a select for enums, a list of inputs for
 * arrays of primitives, and a JSON text area for anything else (objects, mixed arrays). */
export type FieldKind = Primitive | "enum" | "array" | "json";

export interface Constraints {
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
}

export interface ItemModel {
  kind: Primitive | "enum";
  enumValues?: JsonValue[];
  enumLabels?: string[];
  constraints: Constraints;
}

export interface FieldModel {
  /** Property name in the configuration object. */
  key: string;
  /** Visible label: the schema's `title`, else the property name. */
  label: string;
  /** Help text: the schema's `description`. */
  description?: string;
  kind: FieldKind;
  required: boolean;
  hasDefault: boolean;
  default?: JsonValue;
  enumValues?: JsonValue[];
  enumLabels?: string[];
  constraints: Constraints;
  /** For kind "array". */
  item?: ItemModel;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;
  readOnly: boolean;
}

export interface FormModel {
  fields: FieldModel[];
  /** False when the schema forbids keys it does not declare. */
  additionalProperties: boolean;
}

/** Raw UI state of one field: text for text, number, enum (option index, "" for none) and
 * JSON fields; a boolean for checkboxes; one string per item for arrays (for arrays of
 * enums: the selected option indexes). */
export type FieldValue = string | boolean | string[];
export type FormValues = Record<string, FieldValue>;
/** Messages by field key; "" holds those that belong to no field. */
export type FieldErrors = Record<string, string[]>;

type Schema = Record<string, unknown>;

function isObject(v: unknown): v is Schema {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** Resolves a local "$ref" ("#/$defs/x", "#/definitions/x") against the root schema. */
function resolve(schema: Schema, root: Schema, depth = 0): Schema {
  const ref = schema["$ref"];
  if (typeof ref !== "string" || depth > 16 || !ref.startsWith("#/")) return schema;
  let target: unknown = root;
  for (const raw of ref.slice(2).split("/")) {
    const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    target = isObject(target) ? target[part] : undefined;
  }
  if (!isObject(target)) return schema;
  const { $ref: _ignored, ...rest } = schema;
  return { ...resolve(target, root, depth + 1), ...rest };
}

/** The single non-null type of a schema, if it names one. */
function primaryType(schema: Schema): string | undefined {
  const t = schema["type"];
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const nonNull = t.filter((x) => x !== "null");
    if (nonNull.length === 1 && typeof nonNull[0] === "string") return nonNull[0];
  }
  return undefined;
}

/** enum / const / oneOf-of-consts as a list of values with labels. */
function enumOf(schema: Schema): { values: JsonValue[]; labels: string[] } | undefined {
  if (Array.isArray(schema["enum"])) {
    const values = schema["enum"] as JsonValue[];
    return { values, labels: values.map(displayValue) };
  }
  if ("const" in schema) {
    const v = schema["const"] as JsonValue;
    return { values: [v], labels: [displayValue(v)] };
  }
  const alts = schema["oneOf"] ?? schema["anyOf"];
  if (Array.isArray(alts) && alts.length > 0 && alts.every((a) => isObject(a) && "const" in a)) {
    const values = alts.map((a) => (a as Schema)["const"] as JsonValue);
    const labels = alts.map((a, i) => {
      const title = (a as Schema)["title"];
      return typeof title === "string" ? title : displayValue(values[i] ?? null);
    });
    return { values, labels };
  }
  return undefined;
}

export function displayValue(v: JsonValue | undefined): string {
  if (v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function constraintsOf(schema: Schema): Constraints {
  const c: Constraints = {};
  const set = <K extends keyof Constraints>(k: K, v: Constraints[K] | undefined) => {
    if (v !== undefined) c[k] = v;
  };
  set("minimum", num(schema["minimum"]));
  set("maximum", num(schema["maximum"]));
  // Draft 4 used booleans for exclusiveMinimum/Maximum next to minimum/maximum.
  if (schema["exclusiveMinimum"] === true && c.minimum !== undefined) {
    c.exclusiveMinimum = c.minimum;
    delete c.minimum;
  } else set("exclusiveMinimum", num(schema["exclusiveMinimum"]));
  if (schema["exclusiveMaximum"] === true && c.maximum !== undefined) {
    c.exclusiveMaximum = c.maximum;
    delete c.maximum;
  } else set("exclusiveMaximum", num(schema["exclusiveMaximum"]));
  const multipleOf = num(schema["multipleOf"]);
  if (multipleOf !== undefined && multipleOf > 0) c.multipleOf = multipleOf;
  set("minLength", num(schema["minLength"]));
  set("maxLength", num(schema["maxLength"]));
  if (typeof schema["pattern"] === "string") c.pattern = schema["pattern"];
  return c;
}

function itemModel(raw: unknown, root: Schema): ItemModel | undefined {
  if (!isObject(raw)) return undefined;
  const schema = resolve(raw, root);
  const e = enumOf(schema);
  if (e) return { kind: "enum", enumValues: e.values, enumLabels: e.labels, constraints: {} };
  const t = primaryType(schema);
  if (t === "string" || t === "number" || t === "integer" || t === "boolean") {
    return { kind: t, constraints: constraintsOf(schema) };
  }
  return undefined;
}

/** Builds the form model of an object schema. Properties come in declaration order. */
export function buildFormModel(rawSchema: JsonObject | undefined | null): FormModel {
  const root: Schema = isObject(rawSchema) ? rawSchema : {};
  const schema = resolve(root, root);
  const props = isObject(schema["properties"]) ? schema["properties"] : {};
  const required = new Set(
    Array.isArray(schema["required"]) ? (schema["required"] as unknown[]).filter((r) => typeof r === "string") : [],
  );
  const fields: FieldModel[] = [];
  // A google.protobuf.Struct does not keep key order: list required settings first, then
  // the others, each alphabetically, so the form is the same on every load.
  const keys = Object.keys(props).sort((a, b) => Number(required.has(b)) - Number(required.has(a)) || a.localeCompare(b));
  for (const key of keys) {
    const rawProp = props[key];
    const prop = isObject(rawProp) ? resolve(rawProp, root) : {};
    const title = typeof prop["title"] === "string" && prop["title"] ? prop["title"] : key;
    const field: FieldModel = {
      key,
      label: title,
      kind: "json",
      required: required.has(key),
      hasDefault: "default" in prop,
      constraints: constraintsOf(prop),
      readOnly: prop["readOnly"] === true,
    };
    if (typeof prop["description"] === "string" && prop["description"]) field.description = prop["description"];
    if (field.hasDefault) field.default = prop["default"] as JsonValue;
    const e = enumOf(prop);
    const t = primaryType(prop);
    if (e) {
      field.kind = "enum";
      field.enumValues = e.values;
      field.enumLabels = e.labels;
    } else if (t === "string" || t === "number" || t === "integer" || t === "boolean") {
      field.kind = t;
    } else if (t === "array") {
      const item = itemModel(prop["items"], root);
      if (item) {
        field.kind = "array";
        field.item = item;
        const minItems = num(prop["minItems"]);
        const maxItems = num(prop["maxItems"]);
        if (minItems !== undefined) field.minItems = minItems;
        if (maxItems !== undefined) field.maxItems = maxItems;
        if (prop["uniqueItems"] === true) field.uniqueItems = true;
      }
    }
    fields.push(field);
  }
  return { fields, additionalProperties: schema["additionalProperties"] !== false };
}

function itemText(item: ItemModel, v: JsonValue): string {
  if (item.kind === "enum") {
    const i = (item.enumValues ?? []).findIndex((e) => jsonEqual(e, v));
    return i < 0 ? "" : String(i);
  }
  return displayValue(v);
}

/** The raw UI value of one field for a configuration value (undefined: the field's default,
 * or empty). */
export function fieldValue(field: FieldModel, value: JsonValue | undefined): FieldValue {
  const v = value === undefined ? field.default : value;
  switch (field.kind) {
    case "boolean":
      return v === true;
    case "enum": {
      if (v === undefined) return "";
      const i = (field.enumValues ?? []).findIndex((e) => jsonEqual(e, v));
      return i < 0 ? "" : String(i);
    }
    case "array":
      return Array.isArray(v) && field.item ? v.map((x) => itemText(field.item!, x)) : [];
    case "json":
      return v === undefined ? "" : JSON.stringify(v, null, 2);
    default:
      return v === undefined || v === null ? "" : String(v);
  }
}

/** Initial values: from an existing configuration (e.g. a development session's), else the
 * schema's defaults. */
export function initialValues(model: FormModel, config?: JsonObject | null): FormValues {
  const values: FormValues = {};
  for (const f of model.fields) values[f.key] = fieldValue(f, config ? config[f.key] : undefined);
  return values;
}

export function jsonEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function fmt(n: number): string {
  return String(n);
}

/** Checks one number against its constraints; returns messages. */
function checkNumber(n: number, integer: boolean, c: Constraints): string[] {
  const out: string[] = [];
  if (integer && !Number.isInteger(n)) out.push("must be a whole number");
  if (c.minimum !== undefined && n < c.minimum) out.push(`must be at least ${fmt(c.minimum)}`);
  if (c.maximum !== undefined && n > c.maximum) out.push(`must be at most ${fmt(c.maximum)}`);
  if (c.exclusiveMinimum !== undefined && n <= c.exclusiveMinimum)
    out.push(`must be greater than ${fmt(c.exclusiveMinimum)}`);
  if (c.exclusiveMaximum !== undefined && n >= c.exclusiveMaximum)
    out.push(`must be less than ${fmt(c.exclusiveMaximum)}`);
  if (c.multipleOf !== undefined) {
    const q = n / c.multipleOf;
    if (Math.abs(q - Math.round(q)) > 1e-9) out.push(`must be a multiple of ${fmt(c.multipleOf)}`);
  }
  return out;
}

function checkString(s: string, c: Constraints): string[] {
  const out: string[] = [];
  const length = [...s].length;
  if (c.minLength !== undefined && length < c.minLength)
    out.push(c.minLength === 1 ? "must not be empty" : `must be at least ${c.minLength} characters long`);
  if (c.maxLength !== undefined && length > c.maxLength)
    out.push(`must be at most ${c.maxLength} character${c.maxLength === 1 ? "" : "s"} long`);
  if (c.pattern !== undefined) {
    try {
      if (!new RegExp(c.pattern, "u").test(s)) out.push(`must match the pattern ${c.pattern}`);
    } catch {
      // A pattern JavaScript cannot compile is left to the server.
    }
  }
  return out;
}

/** Parses one primitive from its text; returns the value or the messages. */
function parsePrimitive(
  kind: Primitive,
  text: string,
  c: Constraints,
): { value: JsonValue; errors: string[] } {
  if (kind === "number" || kind === "integer") {
    const t = text.trim();
    const n = t === "" ? NaN : Number(t);
    if (!Number.isFinite(n)) return { value: null, errors: [kind === "integer" ? "must be a whole number" : "must be a number"] };
    return { value: n, errors: checkNumber(n, kind === "integer", c) };
  }
  if (kind === "boolean") {
    const t = text.trim().toLowerCase();
    if (t === "true" || t === "false") return { value: t === "true", errors: [] };
    return { value: null, errors: ["must be true or false"] };
  }
  return { value: text, errors: checkString(text, c) };
}

export interface ConfigResult {
  config: JsonObject;
  errors: FieldErrors;
  /** True when no field has an error. */
  ok: boolean;
}

/** Turns raw form values into a configuration object, checking every constraint the form
 * model knows. Empty optional fields are left out (the server fills in schema defaults). */
export function toConfig(model: FormModel, values: FormValues): ConfigResult {
  const config: JsonObject = {};
  const errors: FieldErrors = {};
  const fail = (key: string, messages: string[]) => {
    if (messages.length) (errors[key] ??= []).push(...messages);
  };
  for (const f of model.fields) {
    const raw = values[f.key];
    switch (f.kind) {
      case "boolean": {
        const checked = raw === true;
        if (checked || f.required || f.hasDefault) config[f.key] = checked;
        break;
      }
      case "enum": {
        const idx = typeof raw === "string" ? raw : "";
        if (idx === "") {
          if (f.required) fail(f.key, ["is required"]);
          break;
        }
        const v = (f.enumValues ?? [])[Number(idx)];
        if (v === undefined) fail(f.key, ["must be one of the listed values"]);
        else config[f.key] = v;
        break;
      }
      case "array": {
        const items = Array.isArray(raw) ? raw : [];
        const item = f.item!;
        const out: JsonValue[] = [];
        items.forEach((text, i) => {
          if (item.kind === "enum") {
            const v = (item.enumValues ?? [])[Number(text)];
            if (text === "" || v === undefined) fail(f.key, [`item ${i + 1}: choose a value`]);
            else out.push(v);
            return;
          }
          const p = parsePrimitive(item.kind, text, item.constraints);
          if (p.errors.length) fail(f.key, p.errors.map((m) => `item ${i + 1}: ${m}`));
          else out.push(p.value);
        });
        if (f.minItems !== undefined && items.length < f.minItems)
          fail(f.key, [`must have at least ${f.minItems} item${f.minItems === 1 ? "" : "s"}`]);
        if (f.maxItems !== undefined && items.length > f.maxItems)
          fail(f.key, [`must have at most ${f.maxItems} item${f.maxItems === 1 ? "" : "s"}`]);
        if (f.uniqueItems && new Set(out.map((v) => JSON.stringify(v))).size !== out.length)
          fail(f.key, ["items must be unique"]);
        if (items.length > 0 || f.required || f.hasDefault) config[f.key] = out;
        break;
      }
      case "json": {
        const text = typeof raw === "string" ? raw.trim() : "";
        if (text === "") {
          if (f.required) fail(f.key, ["is required"]);
          break;
        }
        try {
          config[f.key] = JSON.parse(text) as JsonValue;
        } catch {
          fail(f.key, ["is not valid JSON"]);
        }
        break;
      }
      default: {
        const text = typeof raw === "string" ? raw : "";
        const empty = f.kind === "string" ? text === "" : text.trim() === "";
        if (empty) {
          if (f.required && !f.hasDefault) fail(f.key, ["is required"]);
          break;
        }
        const p = parsePrimitive(f.kind, text, f.constraints);
        if (p.errors.length) fail(f.key, p.errors);
        else config[f.key] = p.value;
      }
    }
  }
  return { config, errors, ok: Object.keys(errors).length === 0 };
}

/** The configuration keys whose value differs from `base` (for UpdateDevConfig, which merges
 * the keys it is given over the current configuration). */
export function changedKeys(config: JsonObject, base: JsonObject | undefined | null): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(config)) {
    if (!base || !jsonEqual(base[k], v)) out[k] = v;
  }
  return out;
}

export interface ViolationTarget {
  /** Field key, or "" when the violation names no configuration field. */
  key: string;
  /** Item index for "…percentiles[1]". */
  item?: number;
}

/** Maps a server field violation path to a form field. `prefixes` are the request paths of
 * the configuration: "run.config" for CreateRun, "config" for UpdateDevConfig. Returns null
 * when the path is not inside the configuration at all. */
export function violationTarget(
  field: string,
  prefixes: readonly string[] = ["run.config", "config"],
): ViolationTarget | null {
  for (const prefix of prefixes) {
    if (field === prefix) return { key: "" };
    if (!field.startsWith(prefix)) continue;
    const rest = field.slice(prefix.length);
    const m = /^\.([^.[\]]+)(?:\[(\d+)\])?/.exec(rest);
    if (m) return m[2] !== undefined ? { key: m[1]!, item: Number(m[2]) } : { key: m[1]! };
    if (rest.startsWith("[")) return { key: "" };
  }
  return null;
}

/** Merges server violations (field path → description) into per-field messages. Violations
 * outside the configuration, or naming an unknown field, go to "" (the form's summary). */
export function serverErrors(
  model: FormModel,
  violations: readonly { field: string; description: string }[],
  prefixes?: readonly string[],
): { errors: FieldErrors; rest: { field: string; description: string }[] } {
  const errors: FieldErrors = {};
  const rest: { field: string; description: string }[] = [];
  const keys = new Set(model.fields.map((f) => f.key));
  for (const v of violations) {
    const t = violationTarget(v.field, prefixes);
    if (!t) {
      rest.push(v);
      continue;
    }
    const key = keys.has(t.key) ? t.key : "";
    const message = t.item !== undefined ? `item ${t.item + 1}: ${v.description}` : v.description;
    (errors[key] ??= []).push(key === "" && t.key ? `${t.key}: ${message}` : message);
  }
  return { errors, rest };
}

/** A short human summary of a field's constraints, shown under its help text. */
export function constraintSummary(f: FieldModel): string {
  const parts: string[] = [];
  const c = f.kind === "array" && f.item ? f.item.constraints : f.constraints;
  const prefix = f.kind === "array" ? "each item " : "";
  if (c.minimum !== undefined) parts.push(`${prefix}≥ ${c.minimum}`);
  if (c.exclusiveMinimum !== undefined) parts.push(`${prefix}> ${c.exclusiveMinimum}`);
  if (c.maximum !== undefined) parts.push(`${prefix}≤ ${c.maximum}`);
  if (c.exclusiveMaximum !== undefined) parts.push(`${prefix}< ${c.exclusiveMaximum}`);
  if (c.multipleOf !== undefined) parts.push(`${prefix}multiple of ${c.multipleOf}`);
  if (c.minLength !== undefined)
    parts.push(c.minLength === 1 ? `${prefix}not empty` : `${prefix}at least ${c.minLength} characters`);
  if (c.maxLength !== undefined) parts.push(`${prefix}at most ${c.maxLength} character${c.maxLength === 1 ? "" : "s"}`);
  if (c.pattern !== undefined) parts.push(`${prefix}pattern ${c.pattern}`);
  if (f.minItems !== undefined) parts.push(`at least ${f.minItems} items`);
  if (f.maxItems !== undefined) parts.push(`at most ${f.maxItems} items`);
  if (f.uniqueItems) parts.push("unique items");
  if (f.hasDefault) parts.push(`default ${displayValue(f.default)}`);
  return parts.join(" · ");
}

/** Human type name of a field, for the catalogue's contract table. */
export function typeLabel(f: FieldModel): string {
  switch (f.kind) {
    case "enum":
      return `one of ${(f.enumLabels ?? []).join(", ")}`;
    case "array":
      return `list of ${f.item?.kind === "enum" ? "choices" : (f.item?.kind ?? "values")}`;
    case "json":
      return "JSON";
    default:
      return f.kind;
  }
}
