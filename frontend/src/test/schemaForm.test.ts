import { describe, expect, it } from "vitest";
import {
  buildFormModel,
  changedKeys,
  initialValues,
  serverErrors,
  toConfig,
  violationTarget,
  type JsonObject,
} from "../lib/schemaForm";

// The contracts of examples/tools/logreg and examples/tools/csv_stats.
const logreg: JsonObject = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  additionalProperties: false,
  properties: {
    label_column: { type: "string", minLength: 1, default: "label", description: "Column holding the class." },
    epochs: { type: "integer", minimum: 1, maximum: 100000, default: 200, description: "Full-batch gradient steps." },
    learning_rate: { type: "number", exclusiveMinimum: 0, default: 0.5, description: "Step size." },
    l2: { type: "number", minimum: 0, default: 0 },
    seed: { type: "integer", default: 0 },
  },
};

const csvStats: JsonObject = {
  type: "object",
  additionalProperties: false,
  properties: {
    delimiter: { type: "string", minLength: 1, maxLength: 1, default: "," },
    columns: { type: "array", items: { type: "string", minLength: 1 }, uniqueItems: true, default: [] },
    percentiles: { type: "array", items: { type: "number", minimum: 0, maximum: 100 }, default: [25, 50, 75] },
  },
};

describe("buildFormModel", () => {
  it("maps primitive properties, required first then by name, with defaults and help", () => {
    const m = buildFormModel(logreg);
    expect(m.fields.map((f) => [f.key, f.kind])).toEqual([
      ["epochs", "integer"],
      ["l2", "number"],
      ["label_column", "string"],
      ["learning_rate", "number"],
      ["seed", "integer"],
    ]);
    expect(buildFormModel({ required: ["z"], properties: { a: { type: "string" }, z: { type: "string" } } }).fields.map((f) => f.key)).toEqual(["z", "a"]);
    const epochs = m.fields[0]!;
    expect(epochs.constraints).toEqual({ minimum: 1, maximum: 100000 });
    expect(epochs.default).toBe(200);
    expect(epochs.description).toBe("Full-batch gradient steps.");
    expect(m.fields[3]!.constraints.exclusiveMinimum).toBe(0);
    expect(m.additionalProperties).toBe(false);
  });

  it("maps arrays of primitives, enums, const alternatives, refs and nullable types", () => {
    const m = buildFormModel({
      type: "object",
      required: ["mode"],
      $defs: { level: { type: "string", enum: ["low", "high"] } },
      properties: {
        mode: { enum: ["fast", "exact", 3] },
        level: { $ref: "#/$defs/level", description: "Level." },
        tags: { type: "array", items: { enum: ["a", "b"] } },
        kind: { oneOf: [{ const: "x", title: "Ex" }, { const: "y" }] },
        maybe: { type: ["integer", "null"], minimum: 2 },
        nested: { type: "object", properties: { a: { type: "string" } } },
        old: { type: "number", minimum: 1, exclusiveMinimum: true },
      },
    });
    const byKey = Object.fromEntries(m.fields.map((f) => [f.key, f]));
    expect(byKey["mode"]!.kind).toBe("enum");
    expect(byKey["mode"]!.required).toBe(true);
    expect(byKey["mode"]!.enumLabels).toEqual(["fast", "exact", "3"]);
    expect(byKey["level"]!.kind).toBe("enum");
    expect(byKey["level"]!.description).toBe("Level.");
    expect(byKey["tags"]!.kind).toBe("array");
    expect(byKey["tags"]!.item!.kind).toBe("enum");
    expect(byKey["kind"]!.enumLabels).toEqual(["Ex", "y"]);
    expect(byKey["maybe"]!.kind).toBe("integer");
    expect(byKey["nested"]!.kind).toBe("json");
    expect(byKey["old"]!.constraints).toEqual({ exclusiveMinimum: 1 });
  });

  it("treats a missing or empty schema as no configuration", () => {
    expect(buildFormModel(undefined).fields).toEqual([]);
    expect(buildFormModel({}).fields).toEqual([]);
  });
});

describe("toConfig", () => {
  const model = buildFormModel(logreg);

  it("round-trips the defaults", () => {
    const r = toConfig(model, initialValues(model));
    expect(r.ok).toBe(true);
    expect(r.config).toEqual({ label_column: "label", epochs: 200, learning_rate: 0.5, l2: 0, seed: 0 });
  });

  it("starts from an existing configuration", () => {
    const values = initialValues(model, { epochs: 5, learning_rate: 0.1 });
    expect(values["epochs"]).toBe("5");
    expect(values["learning_rate"]).toBe("0.1");
    expect(values["label_column"]).toBe("label"); // missing keys take the default
  });

  it("checks types, bounds and exclusive bounds", () => {
    const values = { ...initialValues(model), epochs: "0", learning_rate: "0", l2: "-1", seed: "1.5" };
    const r = toConfig(model, values);
    expect(r.ok).toBe(false);
    expect(r.errors["epochs"]).toEqual(["must be at least 1"]);
    expect(r.errors["learning_rate"]).toEqual(["must be greater than 0"]);
    expect(r.errors["l2"]).toEqual(["must be at least 0"]);
    expect(r.errors["seed"]).toEqual(["must be a whole number"]);
    expect(toConfig(model, { ...initialValues(model), epochs: "abc" }).errors["epochs"]).toEqual(["must be a whole number"]);
    expect(toConfig(model, { ...initialValues(model), epochs: "100001" }).errors["epochs"]).toEqual(["must be at most 100000"]);
  });

  it("leaves out empty optional fields so the server fills in defaults", () => {
    const r = toConfig(model, { ...initialValues(model), epochs: " ", label_column: "" });
    expect(r.ok).toBe(true);
    expect(r.config).not.toHaveProperty("epochs");
    expect(r.config).not.toHaveProperty("label_column");
  });

  it("requires required fields without defaults", () => {
    const m = buildFormModel({ type: "object", required: ["name", "n", "c"], properties: { name: { type: "string" }, n: { type: "number" }, c: { enum: [1, 2] } } });
    const r = toConfig(m, initialValues(m));
    expect(r.errors).toEqual({ name: ["is required"], n: ["is required"], c: ["is required"] });
    const ok = toConfig(m, { name: "x", n: "2.5", c: "1" });
    expect(ok.config).toEqual({ name: "x", n: 2.5, c: 2 });
  });

  it("checks string lengths and patterns", () => {
    const m = buildFormModel(csvStats);
    expect(toConfig(m, { ...initialValues(m), delimiter: ";;" }).errors["delimiter"]).toEqual(["must be at most 1 character long"]);
    const p = buildFormModel({ type: "object", properties: { id: { type: "string", pattern: "^[a-z]+$" } } });
    expect(toConfig(p, { id: "A1" }).errors["id"]).toEqual(["must match the pattern ^[a-z]+$"]);
  });

  it("handles arrays of primitives: items, bounds, uniqueness, and cleared lists", () => {
    const m = buildFormModel(csvStats);
    const v = initialValues(m);
    expect(v["percentiles"]).toEqual(["25", "50", "75"]);
    expect(v["columns"]).toEqual([]);
    expect(toConfig(m, v).config).toEqual({ delimiter: ",", columns: [], percentiles: [25, 50, 75] });
    const bad = toConfig(m, { ...v, percentiles: ["10", "101", "x"], columns: ["a", "a"] });
    expect(bad.errors["percentiles"]).toEqual(["item 2: must be at most 100", "item 3: must be a number"]);
    expect(bad.errors["columns"]).toEqual(["items must be unique"]);
    // An emptied list is sent as [] (leaving it out would restore the default).
    expect(toConfig(m, { ...v, percentiles: [] }).config["percentiles"]).toEqual([]);
  });

  it("handles booleans, enums and JSON fields", () => {
    const m = buildFormModel({
      type: "object",
      properties: {
        verbose: { type: "boolean", default: false },
        opt: { type: "boolean" },
        mode: { enum: ["a", "b"], default: "b" },
        extra: { type: "object" },
      },
    });
    const v = initialValues(m);
    expect(v).toEqual({ verbose: false, opt: false, mode: "1", extra: "" });
    expect(toConfig(m, v).config).toEqual({ verbose: false, mode: "b" });
    expect(toConfig(m, { ...v, opt: true, extra: '{"k": [1]}' }).config).toEqual({ verbose: false, opt: true, mode: "b", extra: { k: [1] } });
    expect(toConfig(m, { ...v, extra: "{" }).errors["extra"]).toEqual(["is not valid JSON"]);
  });
});

describe("server violations", () => {
  const model = buildFormModel(csvStats);

  it("maps CreateRun and UpdateDevConfig paths to fields", () => {
    expect(violationTarget("run.config.epochs")).toEqual({ key: "epochs" });
    expect(violationTarget("config.epochs")).toEqual({ key: "epochs" });
    expect(violationTarget("run.config.percentiles[1]")).toEqual({ key: "percentiles", item: 1 });
    expect(violationTarget("run.config")).toEqual({ key: "" });
    expect(violationTarget("run.inputs[0].artifact")).toBeNull();
    expect(violationTarget("run.configuration", ["run.config"])).toBeNull();
  });

  it("groups messages by field and keeps the rest for the summary", () => {
    const { errors, rest } = serverErrors(
      model,
      [
        { field: "run.config.delimiter", description: "';;' is too long" },
        { field: "run.config.percentiles[0]", description: "101 is greater than the maximum of 100" },
        { field: "run.config.bogus", description: "'bogus' is not a known setting" },
        { field: "run.inputs", description: "input 'data' is required" },
      ],
      ["run.config"],
    );
    expect(errors["delimiter"]).toEqual(["';;' is too long"]);
    expect(errors["percentiles"]).toEqual(["item 1: 101 is greater than the maximum of 100"]);
    expect(errors[""]).toEqual(["bogus: 'bogus' is not a known setting"]);
    expect(rest).toEqual([{ field: "run.inputs", description: "input 'data' is required" }]);
  });
});

describe("changedKeys", () => {
  it("keeps only keys whose value differs", () => {
    expect(changedKeys({ a: 1, b: [1, 2], c: "x" }, { a: 1, b: [1, 3], c: "x" })).toEqual({ b: [1, 2] });
    expect(changedKeys({ a: 1 }, null)).toEqual({ a: 1 });
  });
});
