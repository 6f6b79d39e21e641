// Quire console: small hand-written behaviour for server-rendered pages. Each page names itself
// in <body data-page>, and passes its data in <script type="application/json" id="page-data">.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const pageData = () => JSON.parse(($("#page-data") || { textContent: "{}" }).textContent);
const csrf = () => ($('meta[name="csrf-token"]') || { content: "" }).content;
// A new element with properties set (text through textContent, never markup).
const el = (tag, props = {}) => Object.assign(document.createElement(tag), props);
const stateClass = (s) =>
  ({ succeeded: "succeeded", delivered: "succeeded", mailed: "succeeded", failed: "failed", rejected: "failed", cancelled: "failed" })[s] ||
  "queued";
const badge = (s) => el("span", { className: `state ${stateClass(s)}`, textContent: s });

// Calls the JSON API; throws an Error carrying the problem document's detail (and the problem).
async function api(method, url, body, raw) {
  const headers = { "X-CSRF-Token": csrf() };
  let payload;
  if (raw !== undefined) {
    payload = raw;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const err = new Error((data && data.detail) || resp.statusText);
    err.problem = data;
    throw err;
  }
  return data;
}

function showError(el, err) {
  if (!el) return;
  let text = err.message || String(err);
  const p = err.problem;
  if (p && p.field) text = `${p.field}: ${text}`;
  if (p && p.diagnostics) {
    text = p.diagnostics.map((d) => `${d.file || ""}:${d.line || "?"}:${d.column || "?"}: ${d.message}`).join("\n");
  }
  el.textContent = text;
  el.hidden = false;
}

function readJson(textarea, field) {
  const text = textarea.value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    const err = new Error(`${field} is not valid JSON: ${e.message}`);
    throw err;
  }
}

// ---------------------------------------------------------------- progress of a render job

// Follows a job's events over a WebSocket; reconnects with ?after=<last seq> until the final
// event, so a dropped connection (or a failover to another instance) loses nothing.
function follow(jobId, ui) {
  let last = 0;
  let done = false;
  let attempt = 0;
  const connect = () => {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/api/v1/renders/${jobId}/events?after=${last}`);
    ws.onmessage = (msg) => {
      const ev = JSON.parse(msg.data);
      if (ev.seq <= last) return;
      last = ev.seq;
      attempt = 0;
      ui.update(ev);
      if (ev.final) {
        done = true;
        ui.finish(ev);
      }
    };
    ws.onclose = () => {
      if (done) return;
      attempt += 1;
      setTimeout(connect, Math.min(5000, 200 * 2 ** attempt));
    };
  };
  connect();
}

function progressUi(root) {
  const bar = $(".progress", root);
  const fill = $(".bar", bar);
  const label = $(".label", bar);
  const result = $(".result", root);
  const error = $(".error", root);
  return {
    update(ev) {
      fill.style.width = `${ev.progress}%`;
      label.textContent = `${ev.stage} · ${ev.progress}%`;
      bar.dataset.progress = ev.progress;
    },
    finish(ev) {
      bar.classList.add(ev.state === "succeeded" ? "done" : "failed");
      if (ev.state === "succeeded") {
        label.textContent = `done · ${ev.progress}% · ${ev.pages} page${ev.pages === 1 ? "" : "s"}`;
        result.innerHTML = "";
        const a = document.createElement("a");
        a.id = "download";
        a.className = "button";
        a.href = ev.pdf;
        a.textContent = "Download PDF";
        result.appendChild(a);
        result.hidden = false;
      } else {
        label.textContent = `${ev.state} · ${ev.progress}%`;
        showError(error, { message: ev.message || ev.state, problem: ev.error });
      }
    },
  };
}

// ---------------------------------------------------------------- template previews

// A preview is SVG made from a template, so its links are the template author's choice. A reader
// may follow only web and mail addresses and places in the page itself; other references may only
// point into the page or hold an embedded image, as Typst's glyphs, gradients and images do.
// Scripts and animations (which can change a link's target later) and event handlers go too. The
// CSP would stop most of this as well; it should not be the only wall.
const LINK_SCHEMES = ["http:", "https:", "mailto:"];
const URL_ATTRIBUTES = new Set(["href", "src", "action", "formaction"]);
const DROPPED_ELEMENTS = new Set(["script", "set", "animate", "animatemotion", "animatetransform"]);

function safeLink(value) {
  if (value.startsWith("#")) return true;
  try {
    // The browser's own URL parser, so tabs or odd case in "java\tScript:" do not slip through.
    return LINK_SCHEMES.includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

const safeReference = (value) => value.startsWith("#") || value.startsWith("data:image/");

// Parses SVG markup in an inert <template> (nothing loads or runs there) and returns it cleaned.
function safeSvg(markup) {
  const t = document.createElement("template");
  t.innerHTML = markup;
  for (const el of t.content.querySelectorAll("*")) {
    const tag = el.localName.toLowerCase();
    if (DROPPED_ELEMENTS.has(tag)) {
      el.remove();
      continue;
    }
    for (const attr of Array.from(el.attributes)) {
      const name = attr.localName.toLowerCase();
      const url = URL_ATTRIBUTES.has(name);
      const ok = url ? (tag === "a" ? safeLink(attr.value) : safeReference(attr.value)) : !name.startsWith("on");
      if (!ok) el.removeAttributeNode(attr);
    }
  }
  return t.content;
}

// ---------------------------------------------------------------- schedule form

// Binds the schedule form: a live preview of the next fire times, and saving through the API.
function scheduleForm() {
  const form = $("#schedule-form");
  if (!form) return;
  const preview = $("#cron-preview");
  let timer;
  const show = async () => {
    try {
      const q = new URLSearchParams({ cron: form.cron.value, timezone: form.timezone.value, count: "5" });
      const res = await api("GET", `/api/v1/cron/preview?${q}`);
      preview.className = "muted";
      preview.textContent = `Next: ${res.upcoming.map((t) => t.replace("T", " ").slice(0, 19)).join(" · ")} (${form.timezone.value})`;
    } catch (e) {
      preview.className = "error";
      preview.textContent = e.message;
    }
  };
  for (const name of ["cron", "timezone"]) {
    form[name].addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(show, 400);
    });
  }
  show();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = $(".error", form);
    err.hidden = true;
    try {
      const body = {
        name: form.name.value,
        template: form.template.value,
        cron: form.cron.value,
        timezone: form.timezone.value,
        recipients: form.recipients.value.split(/[\s,;]+/).filter(Boolean),
        subject: form.subject.value,
        body: form.body.value,
        parameters: readJson(form.parameters, "parameters") || {},
        data: readJson(form.data, "data") || {},
        jitter: form.jitter.value,
        misfire: form.misfire.value,
        misfire_window: form.misfire_window.value,
        enabled: form.enabled.checked,
        hold_for_review: form.hold_for_review.checked,
        burst: null,
      };
      if (form.burst_datasource && form.burst_datasource.value) {
        body.burst = {
          datasource: form.burst_datasource.value,
          text: form.burst_text.value,
          key_column: form.burst_key_column.value.trim(),
          recipients_column: form.burst_recipients_column.value.trim(),
          parameters: readJson(form.burst_parameters, "burst parameters") || {},
        };
      }
      const s = await api(form.dataset.method, form.dataset.url, body);
      location.href = `/schedules/${s.id}`;
    } catch (ex) {
      showError(err, ex);
    }
  });
}

// ---------------------------------------------------------------- pages

const pages = {
  login() {
    const form = $("#login-form");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const err = $("#login-error");
      err.hidden = true;
      try {
        await api("POST", "/api/v1/auth/login", { email: form.email.value, password: form.password.value });
        // The server checked `next` and put it on the form; the address bar is not read here.
        // The test below only guards against a server that forgot to set it.
        const next = form.dataset.next || "/";
        location.href = /^\/(?![/\\])/.test(next) ? next : "/";
      } catch (ex) {
        showError(err, ex);
      }
    });
  },

  render() {
    const data = pageData();
    const form = $("#render-form");
    const select = form.template;
    const paramsBox = $("#params");
    const fillParams = () => {
      const t = data.templates.find((x) => x.name === select.value);
      paramsBox.innerHTML = "";
      if (!t) return;
      form.data.value = t.sample_data ? JSON.stringify(t.sample_data, null, 2) : "{}";
      for (const p of t.parameters) {
        const label = document.createElement("label");
        label.textContent = p.label || p.name;
        let input;
        if (p.choices && p.choices.length) {
          input = document.createElement("select");
          for (const c of p.choices) input.add(new Option(c, c, false, c === p.default));
        } else if (p.type === "bool") {
          input = document.createElement("select");
          input.add(new Option("yes", "true", false, p.default !== false));
          input.add(new Option("no", "false", false, p.default === false));
        } else {
          input = document.createElement("input");
          input.type = { date: "date", number: "number", integer: "number" }[p.type] || "text";
          if (p.default !== undefined && p.default !== null) input.value = p.default;
        }
        input.dataset.param = p.name;
        input.dataset.type = p.type;
        label.appendChild(input);
        paramsBox.appendChild(label);
      }
    };
    select.addEventListener("change", fillParams);
    fillParams();
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const out = $("#render-status");
      const err = $(".error", out);
      err.hidden = true;
      $(".result", out).hidden = true;
      const bar = $(".progress", out);
      bar.className = "progress";
      out.hidden = false;
      const parameters = {};
      for (const input of $$("[data-param]", paramsBox)) {
        if (input.value === "") continue;
        const t = input.dataset.type;
        parameters[input.dataset.param] =
          t === "bool" ? input.value === "true" : t === "number" || t === "integer" ? Number(input.value) : input.value;
      }
      const ui = progressUi(out);
      try {
        const body = { template: select.value, data: readJson(form.data, "data") || {}, parameters };
        const job = await api("POST", "/api/v1/renders", body);
        $("#job-link").href = `/jobs/${job.id}`;
        ui.update({ stage: job.stage, progress: job.progress });
        follow(job.id, ui);
      } catch (ex) {
        showError(err, ex);
      }
    });
  },

  job() {
    const root = $("#job");
    const ui = progressUi(root);
    if (root.dataset.final === "true") return;
    follow(root.dataset.job, ui);
    $("#cancel")?.addEventListener("click", async () => {
      try {
        await api("DELETE", `/api/v1/renders/${root.dataset.job}`);
      } catch (ex) {
        showError($(".error", root), ex);
      }
    });
  },

  jobs() {
    if ($$(".state.running, .state.queued").length) setTimeout(() => location.reload(), 3000);
  },

  templates() {
    const form = $("#new-template");
    form?.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const starter = "#let data = json(\"data.json\")\n= Hello\n\nThis report was made by Quire.\n";
        const res = await api("POST", "/api/v1/templates", {
          name: form.name.value,
          description: form.description.value,
          files: { "main.typ": starter },
          sample_data: {},
        });
        location.href = `/templates/${res.template.id}`;
      } catch (ex) {
        showError($("#new-error"), ex);
      }
    });
  },

  editor() {
    const data = pageData();
    const files = new Map(data.version.files.map((f) => [f.path, f.text !== undefined ? { text: f.text } : { base64: f.base64 }]));
    let current = data.version.entry;
    const source = $("#source");
    const tabs = $("#tabs");
    const sample = $("#sample-data");
    const params = $("#parameters");
    const status = $("#editor-status");
    const err = $("#editor-error");
    const sources = data.datasources || [];
    // The version's queries as edited; sample parameters stay text until sent.
    const queries = (data.version.queries || []).map((q) => ({
      name: q.name || "",
      datasource: q.datasource || "",
      text: q.text || "",
      params: q.params && Object.keys(q.params).length ? JSON.stringify(q.params, null, 2) : "",
    }));
    const queriesBox = $("#queries");
    const showTabs = () => {
      tabs.innerHTML = "";
      for (const path of files.keys()) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = path;
        if (path === current) b.className = "active";
        b.onclick = () => open(path);
        tabs.appendChild(b);
      }
    };
    const open = (path) => {
      current = path;
      const f = files.get(path);
      source.disabled = f.text === undefined;
      source.value = f.text !== undefined ? f.text : `(binary file, ${Math.round((f.base64.length * 3) / 4)} bytes)`;
      showTabs();
    };
    // The API takes a text file as a string and anything else as {base64}.
    const wireFiles = () => Object.fromEntries([...files].map(([p, f]) => [p, f.text !== undefined ? f.text : { base64: f.base64 }]));
    const sampleParams = (q) => {
      const text = q.params.trim();
      const what = `sample parameters of query ${q.name || `#${queries.indexOf(q) + 1}`}`;
      if (!text) return {};
      let value;
      try {
        value = JSON.parse(text);
      } catch (e) {
        throw new Error(`${what} are not valid JSON: ${e.message}`);
      }
      if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error(`${what} must be a JSON object`);
      return value;
    };
    const wireQueries = () =>
      queries.map((q) => {
        const out = { name: q.name.trim(), datasource: q.datasource, text: q.text };
        const sampleValues = sampleParams(q);
        if (Object.keys(sampleValues).length) out.params = sampleValues;
        return out;
      });
    // The preview binds the queries' sample values of declared parameters (defaults fill the rest).
    const previewParameters = (declared) => {
      const names = new Set((Array.isArray(declared) ? declared : []).map((p) => p.name));
      const out = {};
      for (const q of queries) {
        for (const [k, v] of Object.entries(sampleParams(q))) if (names.has(k)) out[k] = v;
      }
      return out;
    };
    const body = () => ({
      entry: data.version.entry,
      files: wireFiles(),
      parameters: readJson(params, "parameters") || [],
      sample_data: readJson(sample, "sample data"),
      queries: wireQueries(),
    });
    let timer;
    let seq = 0;
    const preview = async () => {
      const mine = ++seq;
      err.hidden = true;
      try {
        const b = body();
        const res = await api("POST", "/api/v1/preview", {
          files: b.files,
          entry: b.entry,
          data: b.sample_data || {},
          declared: b.parameters,
          parameters: previewParameters(b.parameters),
          // Unfinished queries (no data source or text yet) wait until they are.
          queries: b.queries.filter((q) => q.datasource && q.text.trim()),
          max_pages: 5,
        });
        if (mine !== seq) return;
        $("#preview").replaceChildren(safeSvg(res.svg.join("")));
        status.textContent = `${res.pages} page${res.pages === 1 ? "" : "s"}${res.pages > res.svg.length ? ` (first ${res.svg.length} shown)` : ""}`;
      } catch (ex) {
        if (mine === seq) showError(err, ex);
      }
    };
    const schedule = () => {
      clearTimeout(timer);
      timer = setTimeout(preview, 500);
    };
    source.addEventListener("input", () => {
      const f = files.get(current);
      if (f.text !== undefined) f.text = source.value;
      schedule();
    });
    sample.addEventListener("input", schedule);
    params.addEventListener("input", schedule);

    // ------------------------------------------------ queries panel
    const cellText = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
    const resultTable = (res) => {
      const table = el("table", { className: "list" });
      const head = table.createTHead().insertRow();
      for (const c of res.columns) head.appendChild(el("th", { textContent: c }));
      const rows = table.createTBody();
      for (const r of res.rows) {
        const tr = rows.insertRow();
        for (const c of res.columns) tr.insertCell().textContent = cellText(r[c]);
      }
      return table;
    };
    const labelled = (text, control) => {
      const l = el("label", { textContent: text });
      l.appendChild(control);
      return l;
    };
    const queryCard = (q, i) => {
      const card = el("div", { className: "card query" });
      card.dataset.query = String(i);
      const name = el("input", { type: "text", name: "query-name", value: q.name, placeholder: "sales" });
      name.addEventListener("input", () => {
        q.name = name.value;
        schedule();
      });
      const select = el("select", { name: "query-datasource" });
      select.add(new Option("(choose a data source)", ""));
      for (const ds of sources) select.add(new Option(`${ds.name} (${ds.kind})`, ds.name));
      if (q.datasource && !sources.some((ds) => ds.name === q.datasource)) select.add(new Option(`${q.datasource} (missing)`, q.datasource));
      select.value = q.datasource;
      select.addEventListener("change", () => {
        q.datasource = select.value;
        schedule();
      });
      const row = el("div", { className: "row" });
      row.append(labelled("Name (queries/NAME.json)", name), labelled("Data source", select));
      const text = el("textarea", { name: "query-text", spellcheck: false, rows: 5, value: q.text, placeholder: "select region, sum(amount) as total from sales where day >= :since group by region" });
      text.addEventListener("input", () => {
        q.text = text.value;
        schedule();
      });
      const sampleBox = el("textarea", { name: "query-params", spellcheck: false, rows: 2, value: q.params, placeholder: '{"since": "2026-01-01"}' });
      sampleBox.addEventListener("input", () => {
        q.params = sampleBox.value;
        schedule();
      });
      const run = el("button", { type: "button", textContent: "Run" });
      run.dataset.action = "run-query";
      const remove = el("button", { type: "button", className: "danger", textContent: "Remove" });
      remove.dataset.action = "remove-query";
      const actions = el("div", { className: "actions" });
      actions.append(run, remove);
      const summary = el("p", { className: "muted query-summary" });
      const error = el("p", { className: "error", hidden: true });
      const result = el("div", { className: "query-result" });
      card.append(row, labelled("Query (SQL, or a path for HTTP sources)", text), labelled("Sample parameters (JSON object, optional)", sampleBox), actions, summary, error, result);
      remove.addEventListener("click", () => {
        queries.splice(i, 1);
        showQueries();
        schedule();
      });
      run.addEventListener("click", async () => {
        error.hidden = true;
        result.replaceChildren();
        summary.textContent = "running…";
        run.disabled = true;
        try {
          if (!q.datasource) throw new Error("choose a data source");
          const res = await api("POST", "/api/v1/queries/run", {
            datasource: q.datasource,
            text: q.text,
            parameters: sampleParams(q),
            declared: readJson(params, "parameters") || [],
          });
          const shown = res.rows.length < res.row_count ? ` (first ${res.rows.length} shown)` : "";
          summary.textContent = `${res.row_count} row${res.row_count === 1 ? "" : "s"}${shown}${res.truncated ? " · truncated" : ""} · ${res.took_ms.toFixed(1)} ms`;
          result.appendChild(resultTable(res));
        } catch (ex) {
          summary.textContent = "";
          showError(error, ex);
        } finally {
          run.disabled = false;
        }
      });
      return card;
    };
    const showQueries = () => {
      queriesBox.replaceChildren(...queries.map(queryCard));
    };
    // Shows a save error on the query it names (`queries[2].text`) as well.
    const showQueryError = (ex) => {
      const m = /^queries\[(\d+)\]/.exec((ex.problem && ex.problem.field) || "");
      const card = m && $(`[data-query="${m[1]}"]`, queriesBox);
      if (card) showError($(".error", card), ex);
    };
    $("#add-query").addEventListener("click", () => {
      let n = queries.length + 1;
      while (queries.some((q) => q.name === `query${n}`)) n += 1;
      queries.push({ name: `query${n}`, datasource: sources.length === 1 ? sources[0].name : "", text: "", params: "" });
      showQueries();
      $$("[name=query-name]", queriesBox).pop().focus();
    });
    showQueries();
    $("#add-file").addEventListener("change", async (e) => {
      for (const file of e.target.files) {
        const buf = new Uint8Array(await file.arrayBuffer());
        if (/\.(typ|txt|csv|svg|json)$/i.test(file.name)) {
          files.set(file.name, { text: new TextDecoder().decode(buf) });
        } else {
          let bin = "";
          for (const byte of buf) bin += String.fromCharCode(byte);
          files.set(file.name, { base64: btoa(bin) });
        }
      }
      e.target.value = "";
      showTabs();
      schedule();
    });
    $("#save").addEventListener("click", async () => {
      err.hidden = true;
      try {
        const res = await api("PUT", `/api/v1/templates/${data.template.id}`, body());
        status.textContent = `saved as version ${res.version.version}`;
        for (const e of $$(".query > .error", queriesBox)) e.hidden = true;
      } catch (ex) {
        showError(err, ex);
        showQueryError(ex);
      }
    });
    $("#delete-template").addEventListener("click", async () => {
      if (!confirm(`Delete template ${data.template.name} and all its versions?`)) return;
      try {
        await api("DELETE", `/api/v1/templates/${data.template.id}`);
        location.href = "/templates";
      } catch (ex) {
        showError(err, ex);
      }
    });
    open(current);
    preview();
  },

  fonts() {
    $("#font-upload").addEventListener("submit", async (e) => {
      e.preventDefault();
      const file = $("#font-file").files[0];
      const err = $("#font-error");
      err.hidden = true;
      if (!file) return;
      try {
        await api("PUT", `/api/v1/fonts/${encodeURIComponent(file.name)}`, undefined, file);
        location.reload();
      } catch (ex) {
        showError(err, ex);
      }
    });
    for (const b of $$("[data-font]")) {
      b.addEventListener("click", async () => {
        await api("DELETE", `/api/v1/fonts/${encodeURIComponent(b.dataset.font)}`);
        location.reload();
      });
    }
  },

  datasources() {
    const error = $("#datasource-error");
    // A message from before the last reload (a CSV source created whose file did not upload).
    const carried = sessionStorage.getItem("datasource-error");
    if (carried) {
      sessionStorage.removeItem("datasource-error");
      showError(error, new Error(carried));
    }
    // Reload on success: the page shows the recorded outcome of a test.
    const act = (method, url) => async () => {
      try {
        await api(method, url);
        location.reload();
      } catch (ex) {
        showError(error, ex);
      }
    };
    for (const b of $$("[data-test]")) {
      b.addEventListener("click", act("POST", `/api/v1/datasources/${b.dataset.test}/test`));
    }
    for (const b of $$("[data-delete]")) {
      b.addEventListener("click", act("DELETE", `/api/v1/datasources/${b.dataset.delete}`));
    }
    // The file travels as the raw body, typed text/csv whatever the browser thinks it is.
    const upload = (id, file) => api("PUT", `/api/v1/datasources/${id}/file`, undefined, new Blob([file], { type: "text/csv" }));
    for (const input of $$("input[data-upload]")) {
      input.addEventListener("change", async () => {
        const file = input.files[0];
        if (!file) return;
        try {
          await upload(input.dataset.upload, file);
          location.reload();
        } catch (ex) {
          showError(error, ex);
        }
      });
    }
    const form = $("#new-datasource");
    if (!form) return;
    const f = (name) => form.elements.namedItem(name);
    const text = (name) => f(name).value.trim();
    const sections = $$("fieldset[data-kind]", form);
    // Only the chosen kind's fields show; the others are disabled, so the form ignores them.
    const showKind = () => {
      for (const section of sections) {
        const on = section.dataset.kind.split(" ").includes(form.kind.value);
        section.hidden = !on;
        section.disabled = !on;
      }
    };
    form.kind.addEventListener("change", showKind);
    showKind();
    const headersBox = $("#http-headers");
    const addHeader = () => {
      const line = el("div", { className: "row header-line" });
      const name = el("input", { type: "text", placeholder: "Header name, e.g. Authorization", autocomplete: "off" });
      name.dataset.header = "name";
      name.setAttribute("aria-label", "Header name");
      const value = el("input", { type: "password", placeholder: "Value", autocomplete: "new-password" });
      value.dataset.header = "value";
      value.setAttribute("aria-label", "Header value");
      const remove = el("button", { type: "button", className: "secondary", textContent: "Remove" });
      remove.onclick = () => line.remove();
      line.append(name, value, remove);
      headersBox.appendChild(line);
    };
    $("#add-header").addEventListener("click", addHeader);
    // The settings the kind's fields give; empty fields are left to the server's defaults.
    const settingsFor = (kind) => {
      const s = {};
      const put = (key, value) => {
        if (value !== "") s[key] = value;
      };
      if (kind === "postgres" || kind === "mysql") {
        put("url", text("url"));
        put("host", text("host"));
        if (text("port")) s.port = Number(text("port"));
        put("database", text("database"));
        put("user", text("user"));
        put("password", f("password").value);
        s.tls = f("tls").value;
      } else if (kind === "sqlite") {
        put("path", text("path"));
      } else if (kind === "agent") {
        put("source", text("source"));
      } else if (kind === "http") {
        put("base_url", text("base_url"));
        const headers = {};
        for (const line of $$(".header-line", headersBox)) {
          const name = $("[data-header=name]", line).value.trim();
          if (name) headers[name] = $("[data-header=value]", line).value;
        }
        if (Object.keys(headers).length) s.headers = headers;
        put("rows", text("rows"));
        const hosts = text("allowed_hosts").split(/[\s,]+/).filter(Boolean);
        if (hosts.length) s.allowed_hosts = hosts;
        put("timeout", text("timeout"));
        put("max_response", text("max_response"));
        if (f("allow_private_addresses").checked) s.allow_private_addresses = true;
      } else if (kind === "csv") {
        s.delimiter = f("delimiter").value === "tab" ? "\t" : f("delimiter").value;
        s.header = f("header").checked;
        const file = f("file").files[0];
        if (file) s.file_name = file.name;
      }
      return s;
    };
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.hidden = true;
      try {
        const kind = form.kind.value;
        const extra = readJson(form.settings, "more settings") || {};
        if (typeof extra !== "object" || Array.isArray(extra)) throw new Error("more settings must be a JSON object");
        const settings = { ...settingsFor(kind), ...extra };
        const ds = await api("POST", "/api/v1/datasources", { name: form.name.value, kind, settings });
        const file = kind === "csv" ? f("file").files[0] : undefined;
        if (file) {
          try {
            await upload(ds.id, file);
          } catch (ex) {
            sessionStorage.setItem("datasource-error", `${ds.name} was created, but its file was not uploaded (${ex.message}); upload it again with "Upload CSV".`);
          }
        }
        location.reload();
      } catch (ex) {
        showError(error, ex);
      }
    });
  },

  tokens() {
    const form = $("#new-token");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const t = await api("POST", "/api/v1/tokens", { name: form.name.value });
        const out = $("#token-created");
        $("code", out).textContent = t.token;
        out.hidden = false;
      } catch (ex) {
        showError($("#token-error"), ex);
      }
    });
    for (const b of $$("[data-token]")) {
      b.addEventListener("click", async () => {
        await api("DELETE", `/api/v1/tokens/${b.dataset.token}`);
        location.reload();
      });
    }
  },

  agents() {
    const form = $("#new-agent");
    form?.addEventListener("submit", async (e) => {
      e.preventDefault();
      const err = $("#new-agent-error");
      err.hidden = true;
      try {
        const a = await api("POST", "/api/v1/agents", { name: form.name.value });
        $("#agent-token").textContent = a.token;
        $("#agent-created").hidden = false;
        form.name.value = "";
      } catch (ex) {
        showError(err, ex);
      }
    });
    for (const b of $$("[data-revoke]")) {
      b.addEventListener("click", async () => {
        if (!confirm(`Revoke agent ${b.dataset.name}? Its token stops working and its connection closes within seconds.`)) return;
        try {
          await api("DELETE", `/api/v1/agents/${encodeURIComponent(b.dataset.revoke)}`);
          location.reload();
        } catch (ex) {
          showError($("#agent-error"), ex);
        }
      });
    }
  },

  cluster() {
    const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "");
    const uptime = (s) => (s >= 86400 ? `${Math.floor(s / 86400)}d ` : "") + new Date(s * 1000).toISOString().slice(11, 19);
    const cell = (tr, text, cls) => {
      const td = tr.insertCell();
      td.textContent = text;
      if (cls) td.className = cls;
      return td;
    };
    const fill = (id, rows, build) => {
      const body = $(`#${id} tbody`);
      body.innerHTML = "";
      for (const r of rows) build(body.insertRow(), r);
    };
    const render = (o) => {
      const lic = o.license || { seats: [], history: [], standing: {} };
      const seatOf = (id) => lic.seats.find((s) => s.instance_id === id);
      const tierOf = (i) => {
        const seat = seatOf(i.id);
        return seat ? (seat.pool === "unlicensed" ? "single server" : "licensed") : "free tier";
      };
      const warnings = [...o.warnings];
      if (lic.standing.notice) warnings.push(lic.standing.notice);
      for (const i of o.instances) {
        if (i.state === "active" && !seatOf(i.id)) {
          warnings.push(`${i.id} holds no licence seat: it runs in the free tier (one render worker, no leader roles). Add servers to the licence key or run fewer instances.`);
        }
      }
      const badge = (text, cls) => Object.assign(document.createElement("span"), { className: `state ${cls}`, textContent: text });
      const warn = $("#cluster-warnings");
      warn.innerHTML = "";
      for (const w of warnings) {
        const p = document.createElement("p");
        p.className = "error";
        p.textContent = `⚠ ${w}`;
        warn.appendChild(p);
      }
      fill("instances", o.instances, (tr, i) => {
        cell(tr, i.you ? `${i.id} (you are here)` : i.id);
        const state = i.draining && i.state === "active" ? "draining" : i.state;
        cell(tr, "").appendChild(badge(state, state === "active" ? "succeeded" : state === "stale" ? "failed" : "queued"));
        const tier = i.state === "active" ? tierOf(i) : "";
        const licCell = cell(tr, "");
        licCell.className = "license";
        if (tier) licCell.appendChild(badge(tier, tier === "free tier" ? "failed" : "succeeded"));
        if (i.license) licCell.appendChild(Object.assign(document.createElement("div"), { className: "muted", textContent: i.license }));
        cell(tr, `${i.version} (${i.build})`);
        cell(tr, i.address, "muted");
        cell(tr, uptime(i.uptime_seconds));
        cell(tr, i.roles.join(", "));
        cell(tr, `${(i.heartbeat_age_ms / 1000).toFixed(1)} s ago`, "muted");
        cell(tr, i.nats, "muted");
        const actions = cell(tr, "");
        if (i.state === "active") {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "secondary";
          b.textContent = i.drain_requested ? "Resume" : "Drain";
          b.onclick = () => api("POST", `/api/v1/cluster/instances/${i.id}/${i.drain_requested ? "resume" : "drain"}`).then(refresh, (e) => showError($("#cluster-error"), e));
          actions.appendChild(b);
        }
      });
      fill("leases", o.leases, (tr, l) => {
        cell(tr, l.role);
        cell(tr, l.holder || "(free)");
        cell(tr, l.term);
        cell(tr, l.holder ? time(l.expires_at) : "", "muted");
      });
      fill("handovers", o.handovers, (tr, h) => {
        cell(tr, h.role);
        cell(tr, h.term);
        cell(tr, h.holder);
        cell(tr, time(h.from), "muted");
        cell(tr, time(h.until), "muted");
        cell(tr, h.ended || "holding");
      });
      const l = lic.license;
      const st = lic.standing;
      $("#license-summary").textContent = l
        ? `Licence ${l.id} for ${l.customer}: ${st.in_use} of ${st.capacity} seats in use (${l.servers} servers + ${l.allowance} allowance); ${l.expires_at ? `expires ${l.expires_at}` : "does not expire"}.`
        : `No licence key: Quire runs one instance with everything; ${st.in_use} of ${st.capacity} seat in use.`;
      fill("seats", lic.seats, (tr, s) => {
        cell(tr, s.instance_name);
        cell(tr, s.instance_id, "muted");
        cell(tr, s.pool);
        cell(tr, time(s.taken_at), "muted");
        cell(tr, time(s.seen_at), s.stale ? "error" : "muted");
        const actions = cell(tr, "");
        if (s.stale) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "secondary";
          b.textContent = "Release";
          b.title = `Its instance is gone; otherwise released at ${time(s.releases_at)}`;
          b.onclick = () => api("POST", `/api/v1/license/seats/${encodeURIComponent(s.instance_name)}/release`).then(refresh, (e) => showError($("#cluster-error"), e));
          actions.appendChild(b);
        }
      });
      fill("seat-history", lic.history, (tr, e) => {
        cell(tr, time(e.at), "muted");
        cell(tr, e.instance_name);
        cell(tr, e.event);
        cell(tr, e.actor, "muted");
        cell(tr, e.detail || "", "muted");
      });
      $("#cluster-updated").textContent = `Updated ${time(o.now)}.`;
    };
    const refresh = async () => {
      try {
        render(await api("GET", "/api/v1/cluster"));
        $("#cluster-error").hidden = true;
      } catch (e) {
        showError($("#cluster-error"), e);
      }
    };
    render(pageData());
    setInterval(refresh, 2000);
  },

  schedules() {
    scheduleForm();
  },

  schedule() {
    const root = $("#schedule");
    const editor = root.dataset.editor === "true";
    const cell = (tr, text) => {
      const td = tr.insertCell();
      td.textContent = text;
      return td;
    };
    const button = (label, onclick, cls = "secondary") => {
      const b = el("button", { type: "button", className: cls, textContent: label });
      b.onclick = onclick;
      return b;
    };
    const post = (url) => () => api("POST", url).then(refresh, (e) => showError($(".error", root), e));
    // A burst's rows show below it while it runs or has rows to review, or as the user chose.
    const shown = new Map();
    const rowsOpen = (o) => (shown.has(o.id) ? shown.get(o.id) : o.state === "bursting" || o.burst.counts.held > 0);
    const ROWS_LIMIT = 500;
    const progress = (o) => {
      const b = o.burst;
      const box = el("div", { className: "burst-progress" });
      if (b.rows === null || b.rows === undefined) {
        box.append(el("div", { className: "muted", textContent: o.state === "bursting" ? "the burst query runs…" : "no rows" }));
        return box;
      }
      const c = b.counts;
      const bar = el("div", { className: `progress${b.rows && b.done >= b.rows ? " done" : ""}` });
      const pct = b.rows ? Math.round((100 * b.done) / b.rows) : 100;
      bar.append(el("div", { className: "bar", style: `width:${pct}%` }), el("div", { className: "label", textContent: `${pct}%` }));
      const text = `rows ${b.done} done / ${c.failed} failed / ${c.held} held of ${b.rows}`;
      const more = c.pending + c.rendering ? ` · ${c.pending + c.rendering} to render` : "";
      box.append(bar, el("div", { className: "muted", textContent: text + more }));
      return box;
    };
    const rowsTable = (o, rows) => {
      const table = el("table", { className: "list burst-rows" });
      table.dataset.occurrence = o.id;
      const head = table.createTHead().insertRow();
      for (const h of ["Key", "Recipients", "State", "Report", "Error", ""]) head.appendChild(el("th", { textContent: h }));
      const body = table.createTBody();
      for (const r of rows) {
        const tr = body.insertRow();
        tr.dataset.key = r.key;
        cell(tr, r.key);
        cell(tr, r.recipients.join(", "));
        cell(tr, "").appendChild(badge(r.state));
        const pdf = cell(tr, "");
        if (r.pdf) pdf.appendChild(el("a", { href: r.pdf, textContent: "PDF" }));
        cell(tr, r.error || "").className = "error";
        const actions = cell(tr, "");
        if (editor && r.state === "held") {
          const key = encodeURIComponent(r.key);
          actions.append(
            button("Approve", post(`/api/v1/occurrences/${o.id}/rows/${key}/approve`), ""),
            " ",
            button("Reject", post(`/api/v1/occurrences/${o.id}/rows/${key}/reject`)),
          );
        }
      }
      return table;
    };
    let busy = false;
    const refresh = async () => {
      if (busy) return;
      busy = true;
      try {
        const occ = await api("GET", `/api/v1/schedules/${root.dataset.id}/occurrences?limit=50`);
        // Rows first, so the table is replaced in one go.
        const rowsOf = new Map();
        await Promise.all(
          occ
            .filter((o) => o.burst && rowsOpen(o))
            .map(async (o) => rowsOf.set(o.id, await api("GET", `/api/v1/occurrences/${o.id}/rows?limit=${ROWS_LIMIT}`))),
        );
        const body = $("#occurrences tbody");
        body.innerHTML = "";
        for (const o of occ) {
          const tr = body.insertRow();
          tr.dataset.occurrence = o.id;
          cell(tr, o.fire_at.replace("T", " ").slice(0, 19));
          const st = cell(tr, "");
          st.appendChild(badge(o.state));
          if (o.error) st.append(` ${o.error}`);
          if (o.burst) st.appendChild(progress(o));
          const pdf = cell(tr, "");
          if (o.pdf) pdf.appendChild(el("a", { href: o.pdf, textContent: "PDF" }));
          const mails = cell(tr, "");
          for (const m of o.mails) {
            const line = document.createElement("div");
            line.textContent = `${m.recipient}: ${m.state}${m.attempts > 1 ? ` (${m.attempts} attempts)` : ""}${m.last_reply ? ` — ${m.last_reply}` : ""} `;
            if (editor && (m.state === "failed" || m.state === "sent")) line.appendChild(button("Send again", () => api("POST", `/api/v1/deliveries/${m.id}/resend`).then(refresh)));
            mails.appendChild(line);
          }
          const actions = cell(tr, "");
          if (o.burst) {
            const open = rowsOpen(o);
            actions.appendChild(
              button(open ? "Hide rows" : "Rows", () => {
                shown.set(o.id, !open);
                refresh();
              }),
            );
            if (editor && o.burst.counts.held > 0) {
              actions.append(" ", button(`Approve all (${o.burst.counts.held})`, post(`/api/v1/occurrences/${o.id}/approve`), ""));
              actions.append(" ", button("Reject all", post(`/api/v1/occurrences/${o.id}/reject`)));
            }
            const rows = rowsOf.get(o.id);
            if (rows) {
              const td = body.insertRow().insertCell();
              td.colSpan = 5;
              td.appendChild(rowsTable(o, rows));
              if (rows.length >= ROWS_LIMIT) td.appendChild(el("p", { className: "muted", textContent: `The first ${ROWS_LIMIT} rows are shown.` }));
            }
          } else if (editor && o.state === "held") {
            actions.appendChild(button("Approve", post(`/api/v1/occurrences/${o.id}/approve`), ""));
            actions.appendChild(button("Reject", post(`/api/v1/occurrences/${o.id}/reject`)));
          }
        }
      } catch (e) {
        showError($(".error", root), e);
      } finally {
        busy = false;
      }
    };
    refresh();
    setInterval(refresh, 3000);
    if (editor) {
      scheduleForm();
      $("#delete-schedule").addEventListener("click", async () => {
        if (!confirm("Delete this schedule and its history?")) return;
        await api("DELETE", `/api/v1/schedules/${root.dataset.id}`);
        location.href = "/schedules";
      });
    }
  },

  deliveries() {
    for (const b of $$("[data-resend]")) {
      b.addEventListener("click", () => api("POST", `/api/v1/deliveries/${b.dataset.resend}/resend`).then(() => location.reload(), (e) => showError($(".error"), e)));
    }
  },

  settings() {
    const form = $("#mail-settings");
    form?.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("PUT", "/api/v1/settings/mail", { smtp_url: form.smtp_url.value, from: form.from.value });
        location.reload();
      } catch (ex) {
        showError($(".error", form), ex);
      }
    });
  },

  users() {
    const form = $("#new-user");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("POST", "/api/v1/users", { email: form.email.value, password: form.password.value, role: form.role.value });
        location.reload();
      } catch (ex) {
        showError($("#user-error"), ex);
      }
    });
    const pw = $("#set-password");
    pw.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("PATCH", `/api/v1/users/${pw.user.value}`, { password: pw.password.value, revoke_tokens: pw.revoke_tokens.checked });
        location.reload();
      } catch (ex) {
        showError($("#user-error"), ex);
      }
    });
    for (const sel of $$("select[data-user]")) {
      sel.addEventListener("change", () => api("PATCH", `/api/v1/users/${sel.dataset.user}`, { role: sel.value }).catch((ex) => showError($("#user-error"), ex)));
    }
    for (const b of $$("button[data-disable]")) {
      b.addEventListener("click", async () => {
        await api("PATCH", `/api/v1/users/${b.dataset.disable}`, { disabled: b.dataset.value === "true" }).catch((ex) => showError($("#user-error"), ex));
        location.reload();
      });
    }
  },
};

document.addEventListener("DOMContentLoaded", () => {
  for (const b of $$("[data-action=logout]")) {
    b.addEventListener("click", async () => {
      await api("POST", "/api/v1/auth/logout").catch(() => {});
      location.href = "/login";
    });
  }
  const page = pages[document.body.dataset.page];
  if (page) page();
});
