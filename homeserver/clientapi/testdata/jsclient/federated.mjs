// Two matrix-js-sdk clients with Rust crypto on two tenants of one shard, which reach each
// other only through the federation API; run by TestMatrixJSSDKFederated
// (homeserver/clientapi/jsclient_federated_test.go). Alice (tenant A) creates an encrypted
// room, bob (tenant B) joins it through its alias, and each decrypts the other's message:
// device keys, device list updates, one-time key claims and the room key (a to-device
// message) all cross servers. Prints one line per step and "OK" at the end.
//
// Environment:
//   ATOLL_URL_A   base URL of tenant A (its client_host), e.g. http://localhost:PORT
//   ATOLL_URL_B   base URL of tenant B on the same shard, e.g. http://127.0.0.1:PORT
//   ATOLL_STEP_TIMEOUT_MS  how long one wait may take (default 30000)
//   ATOLL_JS_TRACE=1 logs every request with the bodies of the key endpoints
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const urlA = mustEnv("ATOLL_URL_A");
const urlB = mustEnv("ATOLL_URL_B");
const stepTimeout = Number(process.env.ATOLL_STEP_TIMEOUT_MS || 30000);
const trace = process.env.ATOLL_JS_TRACE === "1";
logger.setLevel(process.env.ATOLL_JS_LOG || "error", false);
if (!process.env.ATOLL_JS_LOG) console.debug = console.info = () => {}; // the Rust crypto's tracing

const started = Date.now();
function step(msg) {
	console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function check(cond, msg) {
	if (!cond) throw new Error(`check failed: ${msg}`);
}

function mustEnv(name) {
	const v = process.env[name];
	if (!v) throw new Error(`${name} is not set`);
	return v;
}

function trunc(s) {
	if (typeof s !== "string") return String(s);
	return s.length > 400 ? s.slice(0, 400) + "…" : s;
}

// fetchAs logs who's requests when ATOLL_JS_TRACE=1: the key and to-device bodies and the
// E2EE parts of /sync.
const fetchAs = (who) => async (input, init) => {
	const t0 = Date.now();
	const res = await fetch(input, init);
	if (!trace) return res;
	const u = new URL(input instanceof Request ? input.url : String(input));
	const path = u.pathname.replace("/_matrix/client/", "");
	let line = `${who} ${init?.method || "GET"} ${path} -> ${res.status} in ${Date.now() - t0} ms`;
	if (/keys|sendToDevice|join/.test(path) || res.status >= 400) {
		line += ` req=${trunc(init?.body)} res=${trunc(await res.clone().text())}`;
	} else if (path.endsWith("/sync")) {
		const b = await res.clone().json();
		line += ` device_lists=${JSON.stringify(b.device_lists)} to_device=${trunc(JSON.stringify(b.to_device))}`;
	}
	console.log(`  http ${line}`);
	return res;
};

// waitFor resolves when test() returns a truthy value, checked now and on every emission of
// event by emitter; it rejects after the step timeout naming what it waited for.
function waitFor(emitter, event, what, test) {
	return new Promise((resolve, reject) => {
		let done = false;
		const finish = (fn, v) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			emitter.removeListener(event, listener);
			fn(v);
		};
		const listener = (...args) => {
			try {
				const v = test(...args);
				if (v) finish(resolve, v);
			} catch (e) {
				finish(reject, e);
			}
		};
		const timer = setTimeout(() => finish(reject, new Error(`timed out after ${stepTimeout} ms waiting for ${what}`)), stepTimeout);
		emitter.on(event, listener);
		listener();
	});
}

// account registers localpart and returns a client for a password login's new device.
async function account(baseUrl, localpart) {
	const password = `pw-${localpart}-${Math.random().toString(36).slice(2)}`;
	const anon = sdk.createClient({ baseUrl, fetchFn: fetchAs(localpart) });
	const reg = await anon.registerRequest({ username: localpart, password, auth: { type: "m.login.dummy" } });
	const login = await anon.loginRequest({
		type: "m.login.password",
		identifier: { type: "m.id.user", user: localpart },
		password,
		initial_device_display_name: "js-sdk",
	});
	check(login.user_id === reg.user_id, `login ${localpart}: user_id ${login.user_id} != ${reg.user_id}`);
	step(`${localpart}: registered ${reg.user_id}, device ${login.device_id}`);
	return sdk.createClient({
		baseUrl,
		userId: login.user_id,
		deviceId: login.device_id,
		accessToken: login.access_token,
		timelineSupport: true,
		fetchFn: fetchAs(localpart),
	});
}

async function start(client) {
	const ready = waitFor(client, sdk.ClientEvent.Sync, `${client.getUserId()} first sync`, (state, _prev, data) => {
		if (state === "ERROR") throw new Error(`${client.getUserId()} sync error: ${data?.error}`);
		return state === "PREPARED" || state === "SYNCING";
	});
	await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false });
	await ready;
}

function waitMembership(client, roomId, userId, want) {
	return waitFor(client, sdk.RoomStateEvent.Members, `${client.getUserId()} to see ${userId} ${want} in ${roomId}`,
		() => client.getRoom(roomId)?.getMember(userId)?.membership === want);
}

// waitDevice waits until client's crypto knows other's current device (keys/query over
// federation, refreshed on device_lists.changed).
async function waitDevice(client, other) {
	const deadline = Date.now() + stepTimeout;
	for (;;) {
		const devices = await client.getCrypto().getUserDeviceInfo([other.getUserId()], true);
		if (devices.get(other.getUserId())?.has(other.getDeviceId())) return;
		if (Date.now() > deadline) {
			throw new Error(`timed out after ${stepTimeout} ms waiting for ${client.getUserId()} to know ${other.getUserId()}'s device ${other.getDeviceId()}`);
		}
		await new Promise((r) => setTimeout(r, 200));
	}
}

// waitMessage waits for an m.room.message with body on roomId's live timeline and returns
// it once decrypted.
function waitMessage(client, roomId, body) {
	const room = () => client.getRoom(roomId);
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			cleanup();
			const tl = room()?.getLiveTimeline().getEvents().map((e) => `${e.getType()}(${e.getWireType()}${e.isDecryptionFailure() ? ", UTD" : ""})`) || [];
			reject(new Error(`timed out after ${stepTimeout} ms waiting for ${client.getUserId()} to decrypt ${JSON.stringify(body)} in ${roomId}; timeline: ${tl.join(", ")}`));
		}, stepTimeout);
		const onEvent = async (ev) => {
			if (ev.getRoomId() !== roomId) return;
			if (ev.isEncrypted() || ev.isBeingDecrypted()) await client.decryptEventIfNeeded(ev);
			if (ev.getType() === "m.room.message" && ev.getContent().body === body) {
				cleanup();
				resolve(ev);
			}
		};
		const onTimeline = (ev, _r, toStart) => {
			if (!toStart) onEvent(ev).catch(() => {});
		};
		const onDecrypted = (ev) => onEvent(ev).catch(() => {});
		function cleanup() {
			clearTimeout(timer);
			client.removeListener(sdk.RoomEvent.Timeline, onTimeline);
			client.removeListener(sdk.MatrixEventEvent.Decrypted, onDecrypted);
		}
		client.on(sdk.RoomEvent.Timeline, onTimeline);
		client.on(sdk.MatrixEventEvent.Decrypted, onDecrypted);
		for (const ev of room()?.getLiveTimeline().getEvents() || []) onEvent(ev).catch(() => {});
	});
}

// exchange has from send an encrypted message to roomId and checks to decrypts it.
async function exchange(from, to, roomId, text) {
	const got = waitMessage(to, roomId, text);
	const sent = await from.sendTextMessage(roomId, text);
	step(`${from.getUserId()} sent encrypted ${sent.event_id}`);
	const ev = await got;
	check(ev.getWireType() === "m.room.encrypted", `wire type ${ev.getWireType()}, want m.room.encrypted`);
	check(!ev.isDecryptionFailure(), "decryption failure");
	check(ev.getContent().body === text, `decrypted body ${JSON.stringify(ev.getContent().body)}`);
	check(ev.getSender() === from.getUserId(), `sender ${ev.getSender()}`);
	step(`${to.getUserId()} decrypted ${JSON.stringify(text)}`);
}

async function main() {
	const suffix = Math.random().toString(36).slice(2, 8);
	const alice = await account(urlA, `alice${suffix}`);
	const bob = await account(urlB, `bob${suffix}`);
	const serverA = alice.getUserId().split(":").slice(1).join(":");
	const serverB = bob.getUserId().split(":").slice(1).join(":");
	check(serverA !== serverB, `both users on ${serverA}`);
	await alice.initRustCrypto({ useIndexedDB: false });
	await bob.initRustCrypto({ useIndexedDB: false });
	await start(alice);
	await start(bob);
	step("rust crypto initialised, both clients syncing");

	const aliasName = `secrets${suffix}`;
	const { room_id: roomId } = await alice.createRoom({
		name: "federated encrypted",
		preset: "public_chat",
		room_alias_name: aliasName,
		initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
	});
	step(`alice created ${roomId}`);
	const joined = waitMembership(alice, roomId, bob.getUserId(), "join");
	const room = await bob.joinRoom(`#${aliasName}:${serverA}`);
	check(room.roomId === roomId, `bob joined ${room.roomId}, want ${roomId}`);
	await joined;
	step(`bob joined through #${aliasName}:${serverA}; alice saw the join over federation`);
	await waitFor(bob, sdk.ClientEvent.Sync, "bob to see the room encrypted", () => bob.getRoom(roomId)?.hasEncryptionStateEvent());
	check(await alice.getCrypto().isEncryptionEnabledInRoom(roomId), "alice: room not encrypted");
	check(await bob.getCrypto().isEncryptionEnabledInRoom(roomId), "bob: room not encrypted");

	await waitDevice(alice, bob);
	step("alice's crypto knows bob's device (keys/query over federation)");
	await waitDevice(bob, alice);
	step("bob's crypto knows alice's device (keys/query over federation)");

	await exchange(alice, bob, roomId, `secret for bob ${suffix}`);
	await exchange(bob, alice, roomId, `secret for alice ${suffix}`);

	alice.stopClient();
	bob.stopClient();
	console.log("OK");
}

main().then(
	() => process.exit(0),
	(e) => {
		console.error(`FAIL: ${e?.stack || e}`);
		if (e?.data) console.error(`response: ${JSON.stringify(e.data)}`);
		process.exit(1);
	},
);
