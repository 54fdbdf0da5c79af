// Validates recorded Client-Server API responses against the Matrix OpenAPI definitions, for
// TestResponsesMatchSpec (homeserver/clientapi/spec_test.go).
//
//   node validate.mjs SPEC_DIR EXCHANGES_JSON
//
// SPEC_DIR is a matrix-spec checkout (its data/api/client-server/*.yaml are OpenAPI 3.1
// documents, Swagger 2.0 before v1.10, whose $refs point at other files of the checkout). EXCHANGES_JSON is an array of
// {label, method, path, status, body}. Each exchange is matched to the operation whose path
// template (under the document's basePath) matches the request path, preferring the template
// with the most literal segments, and its body is validated with ajv (JSON Schema 2020-12) against
// the schema of that operation's response for the status code. An exchange matching no operation
// is validated against the standard error schema when it is an error, and otherwise reported as
// skipped. Prints one line per exchange (PASS, SKIP or MISMATCH) and a summary line; exits 1 when
// anything mismatched.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import yaml from "js-yaml";

const [specDir, exchangesFile] = process.argv.slice(2);
if (!specDir || !exchangesFile) {
	console.error("usage: node validate.mjs SPEC_DIR EXCHANGES_JSON");
	process.exit(2);
}
const csDir = path.resolve(specDir, "data/api/client-server");
const errorSchemaFile = path.join(csDir, "definitions/errors/error.yaml");

const unknownFormats = new Set();
const ajv = new Ajv2020({
	strict: false, // the documents carry OpenAPI keywords (example, x-*) next to JSON Schema
	validateSchema: false, // documents are added whole; only the referenced parts are schemas
	allErrors: true,
	logger: {
		log() {},
		warn(msg) {
			const m = /unknown format "([^"]+)"/.exec(String(msg));
			if (m) unknownFormats.add(m[1]);
			else console.log(`ajv: ${msg}`);
		},
		error(msg) {
			console.log(`ajv error: ${msg}`);
		},
	},
});
addFormats(ajv);
// Identifier grammars from the spec's appendices, as the documents name them in `format`.
const mxFormats = {
	"mx-user-id": /^@[^:]+:.+$/,
	"mx-room-id": /^![^:]+(:.+)?$/,
	"mx-event-id": /^\$.+$/,
	"mx-room-alias": /^#[^:]+:.+$/,
	"mx-server-name": /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$/,
	"mx-mxc-uri": /^mxc:\/\/[^/]+\/[^/]+$/,
	"mx-unpadded-base64": /^[A-Za-z0-9+/]*$/,
};
for (const [name, re] of Object.entries(mxFormats)) ajv.addFormat(name, re);

// Documents by absolute file path, each added to ajv under its file URL so relative $refs
// resolve as they do in the checkout.
const docs = new Map();
function load(file) {
	let doc = docs.get(file);
	if (doc === undefined) {
		if (!fs.existsSync(file)) throw new Error(`spec file ${path.relative(specDir, file)} missing`);
		doc = yaml.load(fs.readFileSync(file, "utf8"));
		docs.set(file, doc);
		ajv.addSchema(doc, pathToFileURL(file).href);
	}
	return doc;
}

function pointer(doc, ptr) {
	let cur = doc;
	for (const raw of ptr.split("/").slice(1)) {
		const part = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
		if (cur === null || typeof cur !== "object" || !(part in cur)) return undefined;
		cur = cur[part];
	}
	return cur;
}

const escPtr = (s) => s.replace(/~/g, "~0").replace(/\//g, "~1");

// follow resolves node (at file#ptr) through any chain of $ref-only objects (for response
// objects, which ajv does not resolve) and returns [node, file, ptr].
function follow(node, file, ptr) {
	for (let i = 0; node && node.$ref && i < 20; i++) {
		const [f, frag = ""] = node.$ref.split("#");
		file = f ? path.resolve(path.dirname(file), f) : file;
		ptr = frag;
		node = pointer(load(file), ptr);
	}
	return [node, file, ptr];
}

// preload loads every file reachable through $refs from node (in file) so that ajv can compile.
const walked = new Set();
function preload(node, file) {
	if (node === null || typeof node !== "object") return;
	if (Array.isArray(node)) {
		for (const v of node) preload(v, file);
		return;
	}
	for (const [k, v] of Object.entries(node)) {
		if (k === "$ref" && typeof v === "string") {
			const [f, frag = ""] = v.split("#");
			const target = f ? path.resolve(path.dirname(file), f) : file;
			const key = `${target}#${frag}`;
			if (walked.has(key)) continue;
			walked.add(key);
			const doc = load(target);
			preload(frag ? pointer(doc, frag) : doc, target);
		} else if (k !== "examples" && k !== "example") {
			preload(v, file);
		}
	}
}

// Operations of every top-level document.
const ops = [];
for (const name of fs.readdirSync(csDir).sort()) {
	if (!name.endsWith(".yaml")) continue;
	const file = path.join(csDir, name);
	const doc = load(file);
	if (!doc || !doc.paths) continue;
	// OpenAPI 3 keeps the prefix in servers; older (Swagger 2.0) checkouts in basePath.
	const base = doc.servers?.[0]?.variables?.basePath?.default ?? doc.basePath ?? "/_matrix/client/v3";
	for (const [tmpl, item] of Object.entries(doc.paths)) {
		for (const method of ["get", "put", "post", "delete", "patch"]) {
			if (!item[method]) continue;
			const full = base + tmpl;
			const literal = full.split("/").filter((s) => s && !s.startsWith("{")).length;
			const re = new RegExp("^" + full.split(/\{[^}]+\}/).map((s) => s.replace(/[.*+?^$()|[\]\\]/g, "\\$&")).join("[^/]*") + "$");
			ops.push({ method: method.toUpperCase(), template: full, re, literal, file, ptr: `/paths/${escPtr(tmpl)}/${method}`, op: item[method] });
		}
	}
}

function findOp(method, p) {
	const m = ops.filter((o) => o.method === method && o.re.test(p));
	m.sort((a, b) => b.literal - a.literal);
	return m[0];
}

const compiled = new Map();
function validator(file, ptr) {
	const uri = `${pathToFileURL(file).href}#${ptr}`;
	let v = compiled.get(uri);
	if (!v) {
		preload(pointer(load(file), ptr), file);
		v = ajv.compile({ $ref: uri });
		compiled.set(uri, v);
	}
	return v;
}

function describe(errors) {
	return errors
		.map((e) => `${e.instancePath || "/"} ${e.message}${e.params && Object.keys(e.params).length ? " " + JSON.stringify(e.params) : ""}`)
		.join("; ");
}

const exchanges = JSON.parse(fs.readFileSync(exchangesFile, "utf8"));
let ok = 0;
let bad = 0;
let skipped = 0;
for (const x of exchanges) {
	const where = `${x.label}: ${x.method} ${x.path} -> ${x.status}`;
	const mismatch = (why) => {
		bad++;
		console.log(`MISMATCH ${where}: ${why}`);
	};
	try {
		const o = findOp(x.method, x.path);
		if (!o) {
			if (x.status >= 400) {
				const v = validator(errorSchemaFile, "");
				if (v(x.body)) {
					ok++;
					console.log(`PASS ${where} (no operation; standard error schema)`);
				} else {
					mismatch(`standard error schema (definitions/errors/error.yaml): ${describe(v.errors)}; body ${JSON.stringify(x.body)}`);
				}
			} else {
				skipped++;
				console.log(`SKIP ${where}: the spec defines no such operation`);
			}
			continue;
		}
		const opName = `${path.relative(csDir, o.file)} ${o.method} ${o.template}${o.op.operationId ? ` (${o.op.operationId})` : ""}`;
		const responses = o.op.responses || {};
		let code = String(x.status);
		if (!(code in responses)) code = `${code[0]}XX` in responses ? `${code[0]}XX` : "default";
		if (!(code in responses)) {
			mismatch(`${opName} documents no ${x.status} response (documented: ${Object.keys(responses).join(", ")}); body ${JSON.stringify(x.body)}`);
			continue;
		}
		const [resp, rfile, rptr] = follow(responses[code], o.file, `${o.ptr}/responses/${escPtr(code)}`);
		const schemaPtr = resp?.content?.["application/json"]?.schema
			? `${rptr}/content/${escPtr("application/json")}/schema`
			: resp?.schema ? `${rptr}/schema` : null; // Swagger 2.0
		if (!schemaPtr) {
			skipped++;
			console.log(`SKIP ${where}: ${opName} gives no JSON schema for ${code}`);
			continue;
		}
		const v = validator(rfile, schemaPtr);
		if (v(x.body)) {
			ok++;
			console.log(`PASS ${where} [${opName}]`);
		} else {
			mismatch(`${opName} response ${code}: ${describe(v.errors)}; body ${JSON.stringify(x.body).slice(0, 1500)}`);
		}
	} catch (e) {
		mismatch(`cannot validate: ${e.message}`);
	}
}
if (unknownFormats.size) console.log(`note: formats not checked (not defined here): ${[...unknownFormats].sort().join(", ")}`);
console.log(`validated ${exchanges.length} exchanges: ${ok} ok, ${bad} mismatched, ${skipped} skipped`);
process.exit(bad ? 1 : 0);
