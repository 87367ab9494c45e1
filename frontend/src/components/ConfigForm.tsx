// The configuration form generated from a tool version's JSON Schema: one labelled control
// per property, its description as help text (aria-describedby), constraints summarised,
// client-side and server-side errors next to the field (aria-invalid + aria-describedby).
import type { ChangeEvent, ReactNode } from "react";
import {
  constraintSummary,
  typeLabel,
  type FieldErrors,
  type FieldModel,
  type FieldValue,
  type FormModel,
  type FormValues,
} from "../lib/schemaForm";

export function fieldId(prefix: string, key: string): string {
  return `${prefix}-${key.replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

interface Props {
  model: FormModel;
  values: FormValues;
  errors: FieldErrors;
  onChange: (key: string, value: FieldValue) => void;
  idPrefix: string;
  disabled?: boolean;
}

export function ConfigForm({ model, values, errors, onChange, idPrefix, disabled }: Props) {
  if (model.fields.length === 0) {
    return <p className="empty">This tool version takes no configuration.</p>;
  }
  return (
    <div className="config-form">
      {model.fields.map((f) => (
        <Field
          key={f.key}
          field={f}
          value={values[f.key]}
          errors={errors[f.key]}
          onChange={(v) => onChange(f.key, v)}
          id={fieldId(idPrefix, f.key)}
          disabled={disabled || f.readOnly}
        />
      ))}
    </div>
  );
}

interface FieldProps {
  field: FieldModel;
  value: FieldValue | undefined;
  errors: string[] | undefined;
  onChange: (v: FieldValue) => void;
  id: string;
  disabled: boolean | undefined;
}

function Help({ field, id }: { field: FieldModel; id: string }) {
  const summary = [typeLabel(field), constraintSummary(field)].filter(Boolean).join(" · ");
  return (
    <p id={id} className="help">
      {field.description}
      {field.label !== field.key && (
        <>
          {" "}
          <code>{field.key}</code>
        </>
      )}
      {summary && <span className="constraints">{summary}</span>}
    </p>
  );
}

function ErrorText({ id, errors }: { id: string; errors: string[] | undefined }) {
  if (!errors?.length) return null;
  return (
    <p id={id} className="field-error">
      {errors.join("; ")}
    </p>
  );
}

function describedBy(_field: FieldModel, errors: string[] | undefined, id: string): string | undefined {
  const ids: string[] = [`${id}-help`];
  if (errors?.length) ids.push(`${id}-error`);
  return ids.length ? ids.join(" ") : undefined;
}

function Required({ on }: { on: boolean }) {
  return on ? (
    <span className="required" aria-hidden="true">
      {" "}
      *
    </span>
  ) : null;
}

function Field({ field, value, errors, onChange, id, disabled }: FieldProps) {
  const invalid = !!errors?.length;
  const aria = {
    "aria-describedby": describedBy(field, errors, id),
    "aria-invalid": invalid || undefined,
  };
  // What the select, the textarea and the text input have in common.
  const text = {
    id,
    value: typeof value === "string" ? value : "",
    onChange: (e: ChangeEvent<HTMLSelectElement | HTMLTextAreaElement | HTMLInputElement>) => onChange(e.target.value),
    required: field.required,
    disabled,
    ...aria,
  };
  let control: ReactNode;
  switch (field.kind) {
    case "boolean":
      return (
        <div className={`field field-checkbox${invalid ? " invalid" : ""}`}>
          <input
            id={id}
            type="checkbox"
            checked={value === true}
            onChange={(e) => onChange(e.target.checked)}
            disabled={disabled}
            {...aria}
          />
          <label htmlFor={id}>
            {field.label}
            <Required on={field.required} />
          </label>
          <Help field={field} id={`${id}-help`} />
          <ErrorText id={`${id}-error`} errors={errors} />
        </div>
      );
    case "enum":
      control = (
        <select {...text}>
          {(!field.required || !field.hasDefault) && <option value="">{field.hasDefault ? "(default)" : "(not set)"}</option>}
          {(field.enumLabels ?? []).map((label, i) => (
            <option key={i} value={String(i)}>
              {label}
            </option>
          ))}
        </select>
      );
      break;
    case "array":
      return <ArrayField field={field} value={value} errors={errors} onChange={onChange} id={id} disabled={disabled} />;
    case "json":
      control = <textarea {...text} rows={4} spellCheck={false} className="mono" />;
      break;
    default:
      control = (
        <input
          {...text}
          type="text"
          inputMode={field.kind === "integer" ? "numeric" : field.kind === "number" ? "decimal" : undefined}
          autoComplete="off"
          spellCheck={false}
          placeholder={field.hasDefault && field.kind !== "string" ? `default ${String(field.default)}` : undefined}
        />
      );
  }
  return (
    <div className={`field${invalid ? " invalid" : ""}`}>
      <label htmlFor={id}>
        {field.label}
        <Required on={field.required} />
      </label>
      {control}
      <Help field={field} id={`${id}-help`} />
      <ErrorText id={`${id}-error`} errors={errors} />
    </div>
  );
}

function ArrayField({ field, value, errors, onChange, id, disabled }: FieldProps) {
  const items = Array.isArray(value) ? value : [];
  const item = field.item!;
  const invalid = !!errors?.length;
  const legendId = `${id}-legend`;
  if (item.kind === "enum") {
    const selected = new Set(items);
    return (
      <fieldset className={`field field-array${invalid ? " invalid" : ""}`} aria-describedby={describedBy(field, errors, id)}>
        <legend id={legendId}>
          {field.label}
          <Required on={field.required} />
        </legend>
        {(item.enumLabels ?? []).map((label, i) => {
          const v = String(i);
          return (
            <div key={v} className="field-checkbox">
              <input
                id={`${id}-${i}`}
                type="checkbox"
                checked={selected.has(v)}
                disabled={disabled}
                onChange={(e) => {
                  const next = new Set(selected);
                  if (e.target.checked) next.add(v);
                  else next.delete(v);
                  onChange([...next].sort((a, b) => Number(a) - Number(b)));
                }}
              />
              <label htmlFor={`${id}-${i}`}>{label}</label>
            </div>
          );
        })}
        <Help field={field} id={`${id}-help`} />
        <ErrorText id={`${id}-error`} errors={errors} />
      </fieldset>
    );
  }
  return (
    <fieldset className={`field field-array${invalid ? " invalid" : ""}`} aria-describedby={describedBy(field, errors, id)}>
      <legend id={legendId}>
        {field.label}
        <Required on={field.required} />
      </legend>
      {items.length === 0 && <p className="empty small">No items.</p>}
      <ol className="array-items">
        {items.map((text, i) => (
          <li key={i}>
            <label htmlFor={`${id}-${i}`} className="visually-hidden">
              {field.label} item {i + 1}
            </label>
            {item.kind === "boolean" ? (
              <select id={`${id}-${i}`} value={text} disabled={disabled} onChange={(e) => onChange(items.map((x, j) => (j === i ? e.target.value : x)))}>
                <option value="true">true</option>
                <option value="false">false</option>
              </select>
            ) : (
              <input
                id={`${id}-${i}`}
                type="text"
                inputMode={item.kind === "integer" ? "numeric" : item.kind === "number" ? "decimal" : undefined}
                value={text}
                disabled={disabled}
                autoComplete="off"
                spellCheck={false}
                aria-invalid={invalid || undefined}
                onChange={(e) => onChange(items.map((x, j) => (j === i ? e.target.value : x)))}
              />
            )}
            <button
              type="button"
              className="small secondary"
              disabled={disabled}
              aria-label={`Remove ${field.label} item ${i + 1}`}
              onClick={() => onChange(items.filter((_, j) => j !== i))}
            >
              Remove
            </button>
          </li>
        ))}
      </ol>
      <button
        type="button"
        className="small secondary"
        disabled={disabled || (field.maxItems !== undefined && items.length >= field.maxItems)}
        onClick={() => onChange([...items, item.kind === "boolean" ? "false" : ""])}
      >
        Add item<span className="visually-hidden"> to {field.label}</span>
      </button>
      <Help field={field} id={`${id}-help`} />
      <ErrorText id={`${id}-error`} errors={errors} />
    </fieldset>
  );
}
