// Submit a run: choose a tool version, fill in the configuration form generated from its
// JSON Schema, bind its inputs (upload or existing artifact), and CreateRun. Client-side
// checks first; the server's field violations are shown next to their fields.
import { Code } from "@connectrpc/connect";
import { useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { api } from "../api/client";
import { isRetryable, toProblem, type Violation } from "../api/errors";
import { uuid4 } from "../auth/pkce";
import { ConfigForm, fieldId } from "../components/ConfigForm";
import { Empty, Loading, PageTitle, ProblemView } from "../components/common";
import { InputPicker, chosenArtifact, type InputChoice } from "../components/InputPicker";
import { ToolSelect } from "../components/ToolSelect";
import type { ToolVersion } from "../gen/flnet/api/control/v1/tool_pb";
import { listAllVersions } from "../lib/cache";
import { parseToolId, runPath, toolName } from "../lib/names";
import {
  buildFormModel,
  initialValues,
  serverErrors,
  toConfig,
  type FieldErrors,
  type FieldValue,
  type FormValues,
  type JsonObject,
} from "../lib/schemaForm";
import { useAsync, useDocumentTitle } from "../lib/useAsync";
import { Link, navigate, setQuery, useLocation } from "../router";

export function NewRunPage() {
  useDocumentTitle("Submit a run");
  const { search } = useLocation();
  const tool = search.get("tool") ?? "";
  const version = search.get("version") ?? "";
  const tools = useAsync(async (signal) => (await api().tools.listTools({ parent: api().parent(), pageSize: 1000 }, { signal })).tools, []);
  const versions = useAsync(
    async (signal) => (tool ? listAllVersions(toolName(api().tenant(), tool), signal) : ([] as ToolVersion[])),
    [tool],
  );
  const selected = versions.data?.find((v) => v.version === version) ?? (version ? undefined : versions.data?.[0]);

  return (
    <section className="page" aria-labelledby="newrun-title">
      <PageTitle>
        <span id="newrun-title">Submit a run</span>
      </PageTitle>
      <div className="filters" role="group" aria-label="Tool version">
        <ToolSelect
          id="newrun-tool"
          value={tool}
          tools={tools.data}
          noneLabel={tools.loading ? "Loading tools…" : "Choose a tool"}
          onChange={(t) => setQuery({ tool: t, version: undefined })}
        />
        <div className="tool">
          <label htmlFor="newrun-version">Version</label>
          <select
            id="newrun-version"
            value={selected?.version ?? ""}
            disabled={!tool || !versions.data?.length}
            onChange={(e) => setQuery({ tool, version: e.target.value })}
          >
            {!selected && <option value="">{tool ? (versions.loading ? "Loading versions…" : "Choose a version") : "Choose a tool first"}</option>}
            {(versions.data ?? []).map((v, i) => (
              <option key={v.name} value={v.version}>
                {v.version}
                {i === 0 ? " (latest)" : ""}
              </option>
            ))}
          </select>
        </div>
      </div>
      {tools.error !== undefined && <ProblemView error={tools.error} what="list tools" onRetry={tools.reload} />}
      {tools.data && tools.data.length === 0 && <Empty>No tools are registered yet.</Empty>}
      {versions.error !== undefined && <ProblemView error={versions.error} what="load this tool's versions" onRetry={versions.reload} />}
      {tool && versions.loading && <Loading label="Loading versions…" />}
      {versions.data && version && !selected && (
        <p role="alert" className="problem">
          Not found: {tool} has no version {version}.
        </p>
      )}
      {selected && <RunForm key={selected.name} version={selected} />}
    </section>
  );
}

function RunForm({ version }: { version: ToolVersion }) {
  const model = useMemo(() => buildFormModel(version.configSchema ?? null), [version]);
  const [values, setValues] = useState<FormValues>(() => initialValues(model));
  const [errors, setErrors] = useState<FieldErrors>({});
  const [inputErrors, setInputErrors] = useState<Record<string, string>>({});
  // Problems the server named that belong to no field or input.
  const [other, setOther] = useState<string[]>([]);
  const [choices, setChoices] = useState<Record<string, InputChoice>>({});
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<unknown>(undefined);
  const pending = useRef<{ key: string; id: string } | null>(null);
  const summaryRef = useRef<HTMLDivElement>(null);
  const artifacts = useAsync(
    async (signal) => (await api().artifacts.listArtifacts({ parent: api().parent(), pageSize: 200 }, { signal })).artifacts,
    [],
  );

  const change = (key: string, v: FieldValue) => {
    setValues((old) => ({ ...old, [key]: v }));
    setErrors((old) => {
      if (!old[key]) return old;
      const { [key]: _drop, ...rest } = old;
      return rest;
    });
  };

  // The summary follows the fields: a problem fixed in its field leaves the summary too.
  const summary = useMemo(
    () => [
      ...Object.entries(errors).flatMap(([k, ms]) => ms.map((m) => (k ? `${k}: ${m}` : m))),
      ...Object.entries(inputErrors).map(([k, m]) => `${k}: ${m}`),
      ...other,
    ],
    [errors, inputErrors, other],
  );

  const focusSummary = () => setTimeout(() => summaryRef.current?.focus(), 0);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setFailure(undefined);
    const result = toConfig(model, values);
    const inErr: Record<string, string> = {};
    for (const spec of version.inputs) {
      const c = choices[spec.name];
      if (c?.mode === "upload" && c.busy) inErr[spec.name] = "The upload is still running.";
      else if (spec.required && !chosenArtifact(c)) inErr[spec.name] = "Choose a file or an existing artifact.";
    }
    setErrors(result.errors);
    setInputErrors(inErr);
    setOther([]);
    if (Object.keys(result.errors).length || Object.keys(inErr).length) {
      focusSummary();
      return;
    }
    const inputs = version.inputs
      .map((spec) => ({ name: spec.name, artifact: chosenArtifact(choices[spec.name]) }))
      .filter((i): i is { name: string; artifact: string } => !!i.artifact);
    const key = JSON.stringify([version.name, result.config, inputs]);
    // The same request again (after a network failure) keeps its request_id: no duplicate run.
    if (!pending.current || pending.current.key !== key) pending.current = { key, id: uuid4() };
    setBusy(true);
    try {
      const res = await api().runs.createRun({
        parent: api().parent(),
        requestId: pending.current.id,
        run: { toolVersion: version.name, config: result.config as JsonObject, inputs },
      });
      if (res.run) navigate(runPath(res.run.name));
    } catch (err) {
      const p = toProblem(err);
      if (!isRetryable(err)) pending.current = null;
      if (p.code === Code.InvalidArgument && p.violations.length) {
        showServerViolations(p.violations, inputs);
      } else {
        setFailure(err);
      }
      setBusy(false);
      focusSummary();
    }
  };

  const showServerViolations = (violations: Violation[], sent: { name: string }[]) => {
    const { errors: fieldErrors, rest } = serverErrors(model, violations, ["run.config"]);
    const inErr: Record<string, string> = {};
    const other: string[] = [];
    for (const v of rest) {
      const m = /^run\.inputs\[(\d+)\]/.exec(v.field);
      const name = m ? sent[Number(m[1])]?.name : undefined;
      if (name) inErr[name] = v.description;
      else other.push(`${v.field}: ${v.description}`);
    }
    const { "": unplaced, ...placed } = fieldErrors;
    setErrors(placed);
    setInputErrors(inErr);
    setOther([...(unplaced ?? []), ...other]);
  };

  useEffect(() => {
    setValues(initialValues(model));
  }, [model]);

  return (
    <form className="run-form" onSubmit={(e) => void submit(e)} noValidate aria-labelledby="runform-title">
      <h2 id="runform-title">
        {parseToolId(version.name)} {version.version}
      </h2>
      <p className="lead">{version.description}</p>
      <p className="small">
        <Link to={`/tools/${encodeURIComponent(parseToolId(version.name) ?? "")}/versions/${encodeURIComponent(version.version)}`}>View the contract of this version</Link>
      </p>
      <div ref={summaryRef} tabIndex={-1} className="summary-anchor">
        {summary.length > 0 && (
          <div role="alert" className="problem error-summary">
            <p className="problem-title">
              {summary.length === 1 ? "1 problem" : `${summary.length} problems`} to fix before the run can start:
            </p>
            <ul>
              {summary.map((m, i) => {
                const key = m.split(":")[0] ?? "";
                const target = model.fields.some((f) => f.key === key) ? fieldId("cfg", key) : version.inputs.some((s) => s.name === key) ? `in-${key}-mode-upload` : null;
                return <li key={i}>{target ? <a href={`#${target}`}>{m}</a> : m}</li>;
              })}
            </ul>
          </div>
        )}
        {failure !== undefined && <ProblemView error={failure} what="submit the run" />}
      </div>
      <fieldset className="group">
        <legend>Configuration</legend>
        <ConfigForm model={model} values={values} errors={errors} onChange={change} idPrefix="cfg" disabled={busy} />
        <button type="button" className="secondary small" onClick={() => { setValues(initialValues(model)); setErrors({}); }}>
          Reset to defaults
        </button>
      </fieldset>
      <fieldset className="group">
        <legend>Inputs</legend>
        {version.inputs.length === 0 && <p className="empty">This tool version takes no inputs.</p>}
        {artifacts.error !== undefined && <ProblemView error={artifacts.error} what="list existing artifacts" onRetry={artifacts.reload} />}
        {version.inputs.map((spec) => (
          <InputPicker
            key={spec.name}
            spec={spec}
            idPrefix="in"
            choice={choices[spec.name]}
            onChange={(c) => {
              setChoices((old) => ({ ...old, [spec.name]: c }));
              setInputErrors((old) => {
                const { [spec.name]: _drop, ...rest } = old;
                return rest;
              });
            }}
            artifacts={artifacts.data}
            error={inputErrors[spec.name]}
          />
        ))}
      </fieldset>
      <div className="actions">
        <button type="submit" disabled={busy}>
          {busy ? "Submitting…" : "Submit run"}
        </button>
      </div>
    </form>
  );
}
