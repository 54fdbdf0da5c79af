// A matrix-js-sdk client against a running Atoll shard, run by TestMatrixJSSDK
// (homeserver/clientapi/jsclient_test.go). Prints one line per step and "OK" at the end; any
// failure exits non-zero.
//
// Environment:
//   ATOLL_URL_A   base URL of tenant A (its client_host), e.g. http://localhost:PORT
//   ATOLL_URL_B   base URL of tenant B on the same shard, e.g. http://127.0.0.1:PORT
//   ATOLL_STEP_TIMEOUT_MS  how long one wait may take (default 30000)
//   ATOLL_JS_MODE  "live" (default): rooms are created and joined while the clients sync;
//                  "prejoined": rooms are set up before the clients start syncing
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const urlA = mustEnv("ATOLL_URL_A");
const urlB = mustEnv("ATOLL_URL_B");
const live = (process.env.ATOLL_JS_MODE || "live") === "live";
const stepTimeout = Number(process.env.ATOLL_STEP_TIMEOUT_MS || 30000);
const trace = process.env.ATOLL_JS_TRACE === "1";
logger.setLevel(process.env.ATOLL_JS_LOG || "error", false);
if (!process.env.ATOLL_JS_LOG) console.debug = () => {}; // the Rust crypto's DEBUG tracing

// fetchAs returns a fetch function that, when ATOLL_JS_TRACE=1, logs every request of who
// with its status and timing, and the bodies of the key and to-device endpoints and the E2EE
// parts of /sync.
const fetchAs = (who) => async (input, init) => {
	const t0 = Date.now();
	const res = await fetch(input, init);
	if (!trace) return res;
	const u = new URL(input instanceof Request ? input.url : String(input));
	const path = u.pathname.replace("/_matrix/client/", "");
	let line = `${who} ${init?.method || "GET"} ${u.host} ${path}${u.search.includes("since") ? ` (since ${u.searchParams.get("since")}, timeout ${u.searchParams.get("timeout")})` : ""} -> ${res.status} in ${Date.now() - t0} ms`;
	if (/keys|sendToDevice/.test(path) || res.status >= 400) {
		line += ` req=${trunc(init?.body)} res=${trunc(await res.clone().text())}`;
	} else if (path.endsWith("/sync")) {
		const b = await res.clone().json();
		const rooms = Object.entries(b.rooms?.join || {}).map(([id, r]) =>
			`${id.slice(0, 8)}:[${(r.timeline?.events || []).map((e) => `${e.type}${e.state_key ? `(${e.state_key.slice(0, 6)} ${e.content?.membership || ""})` : ""}`).join(" ")}]`);
		const inv = Object.keys(b.rooms?.invite || {}).map((id) => id.slice(0, 8));
		line += ` next_batch=${b.next_batch} join=${rooms.join(" ")} invite=${inv} device_lists=${JSON.stringify(b.device_lists)} to_device=${trunc(JSON.stringify(b.to_device))} otk=${JSON.stringify(b.device_one_time_keys_count)}`;
	}
	console.log(`  [${((Date.now() - started) / 1000).toFixed(1)}s] http ${line}`);
	return res;
};

function trunc(s) {
	if (typeof s !== "string") return String(s);
	return s.length > 400 ? s.slice(0, 400) + "…" : s;
}

function mustEnv(name) {
	const v = process.env[name];
	if (!v) throw new Error(`${name} is not set`);
	return v;
}

const started = Date.now();
function step(msg) {
	console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function check(cond, msg) {
	if (!cond) throw new Error(`check failed: ${msg}`);
}

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

// account registers localpart with m.login.dummy through the SDK, then logs in with the
// password on a new device and returns a client for that device.
async function account(baseUrl, localpart) {
	const password = `pw-${localpart}-${Math.random().toString(36).slice(2)}`;
	const anon = sdk.createClient({ baseUrl, fetchFn: fetchAs(localpart) });
	const reg = await anon.registerRequest({
		username: localpart,
		password,
		auth: { type: "m.login.dummy" },
		initial_device_display_name: "registration",
	});
	check(reg.user_id && reg.user_id.startsWith(`@${localpart}:`), `register ${localpart}: user_id ${reg.user_id}`);
	check(reg.access_token, `register ${localpart}: access_token`);
	const login = await anon.loginRequest({
		type: "m.login.password",
		identifier: { type: "m.id.user", user: localpart },
		password,
		initial_device_display_name: "js-sdk",
	});
	check(login.user_id === reg.user_id, `login ${localpart}: user_id ${login.user_id} != ${reg.user_id}`);
	check(login.device_id && login.device_id !== reg.device_id, `login ${localpart}: new device_id ${login.device_id}`);
	step(`${localpart}: registered ${reg.user_id}, logged in device ${login.device_id}`);
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

function membership(client, roomId, userId) {
	return client.getRoom(roomId)?.getMember(userId)?.membership;
}

// waitMembership waits until client sees userId's membership in roomId become want.
function waitMembership(client, roomId, userId, want) {
	return waitFor(client, sdk.RoomStateEvent.Members, `${client.getUserId()} to see ${userId} ${want} in ${roomId}`,
		() => membership(client, roomId, userId) === want);
}

function waitInvite(client, roomId) {
	return waitFor(client, sdk.ClientEvent.Sync, `${client.getUserId()} to be invited to ${roomId}`,
		() => client.getRoom(roomId)?.getMyMembership() === "invite");
}

// waitMessage waits for a live m.room.message with body on roomId's timeline and returns the
// event once it is decrypted (when it was encrypted).
function waitMessage(client, roomId, body) {
	const seen = (ev) => ev.getRoomId() === roomId && ev.getType() === "m.room.message" && ev.getContent().body === body;
	const room = () => client.getRoom(roomId);
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			cleanup();
			const tl = room()?.getLiveTimeline().getEvents().map((e) => `${e.getType()}(${e.getWireType()}${e.isDecryptionFailure() ? ", UTD" : ""})`) || [];
			reject(new Error(`timed out after ${stepTimeout} ms waiting for ${client.getUserId()} to receive ${JSON.stringify(body)} in ${roomId}; timeline: ${tl.join(", ")}`));
		}, stepTimeout);
		const onEvent = async (ev) => {
			if (ev.getRoomId() !== roomId) return;
			if (ev.isEncrypted() || ev.isBeingDecrypted()) {
				await client.decryptEventIfNeeded(ev);
			}
			if (seen(ev)) {
				cleanup();
				resolve(ev);
			}
		};
		const onTimeline = (ev, r, toStartOfTimeline) => {
			if (!toStartOfTimeline) onEvent(ev).catch(() => {});
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

async function expectMatrixError(what, promise, statuses) {
	try {
		await promise;
	} catch (e) {
		check(statuses.includes(e.httpStatus), `${what}: status ${e.httpStatus} (${e.errcode}), want one of ${statuses}`);
		step(`${what}: refused with ${e.httpStatus} ${e.errcode}`);
		return;
	}
	throw new Error(`${what}: succeeded, want an error`);
}

// waitDevice waits until client's crypto knows other's current device, as the SDK tracks it
// (keys/query, refreshed on device_lists.changed from /sync).
async function waitDevice(client, other) {
	const deadline = Date.now() + stepTimeout;
	for (;;) {
		const devices = await client.getCrypto().getUserDeviceInfo([other.getUserId()], true);
		if (devices.get(other.getUserId())?.has(other.getDeviceId())) return;
		if (Date.now() > deadline) {
			throw new Error(`timed out after ${stepTimeout} ms waiting for ${client.getUserId()} to know ${other.getUserId()}'s device ${other.getDeviceId()}`);
		}
		await new Promise((r) => setTimeout(r, 100));
	}
}

// roomWith has owner create a room, invite guest and guest join it. When both clients are
// syncing (live), each step waits until the other side has seen it through /sync.
async function roomWith(owner, guest, opts) {
	const { room_id: roomId } = await owner.createRoom(opts);
	step(`${owner.getUserId()} created ${roomId} (${opts.name})`);
	const syncing = owner.clientRunning && guest.clientRunning;
	const invited = syncing ? waitInvite(guest, roomId) : null;
	await owner.invite(roomId, guest.getUserId());
	if (invited) {
		await invited;
		step(`${guest.getUserId()} saw the invite through sync`);
	}
	const joined = syncing ? waitMembership(owner, roomId, guest.getUserId(), "join") : null;
	if (syncing) {
		await guest.joinRoom(roomId);
	} else {
		await guest.http.authedRequest("POST", `/rooms/${encodeURIComponent(roomId)}/join`, undefined, {});
	}
	if (joined) {
		await joined;
		step(`${owner.getUserId()} saw ${guest.getUserId()} join through sync`);
	}
	return roomId;
}

async function main() {
	const suffix = Math.random().toString(36).slice(2, 8);
	const alice = await account(urlA, `alice${suffix}`);
	const bob = await account(urlA, `bob${suffix}`);
	const aliceId = alice.getUserId();
	const bobId = bob.getUserId();

	// Plain room: create, invite, join, then messages both ways through /sync. In "live" mode
	// the clients sync while the memberships change (invite and join seen through /sync); in
	// "prejoined" mode the room is set up over plain HTTP before the clients start.
	if (live) {
		await start(alice);
		await start(bob);
		step("both clients syncing");
	}
	const plainRoom = await roomWith(alice, bob, { name: "plain", preset: "private_chat" });
	if (!live) {
		await start(alice);
		await start(bob);
		step("both clients syncing");
	}
	check(membership(alice, plainRoom, bobId) === "join", "alice does not see bob joined");

	let got = waitMessage(bob, plainRoom, "hello bob");
	await alice.sendTextMessage(plainRoom, "hello bob");
	let ev = await got;
	check(ev.getSender() === aliceId, `sender ${ev.getSender()}`);
	check(!ev.isEncrypted(), "plain message arrived encrypted");
	step("bob received alice's message");
	got = waitMessage(alice, plainRoom, "hello alice");
	await bob.sendTextMessage(plainRoom, "hello alice");
	ev = await got;
	check(ev.getSender() === bobId, `sender ${ev.getSender()}`);
	step("alice received bob's reply");

	// Encrypted room: new clients for fresh devices with Rust crypto, so the plain part above
	// does not depend on the key endpoints.
	alice.stopClient();
	bob.stopClient();
	const aliceE = await account(urlA, `alicee${suffix}`);
	const bobE = await account(urlA, `bobe${suffix}`);
	await aliceE.initRustCrypto({ useIndexedDB: false });
	await bobE.initRustCrypto({ useIndexedDB: false });
	step("rust crypto initialised on both devices");
	const e2eeOpts = {
		name: "encrypted",
		preset: "private_chat",
		initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
	};
	let e2eeRoom;
	if (!live) e2eeRoom = await roomWith(aliceE, bobE, e2eeOpts);
	await start(aliceE);
	await start(bobE);
	await waitDevice(bobE, aliceE);
	step("bob's device sees alice's device keys");
	if (live) e2eeRoom = await roomWith(aliceE, bobE, e2eeOpts);
	check(membership(aliceE, e2eeRoom, bobE.getUserId()) === "join" || await waitMembership(aliceE, e2eeRoom, bobE.getUserId(), "join"),
		"alice does not see bob joined the encrypted room");
	check(await aliceE.getCrypto().isEncryptionEnabledInRoom(e2eeRoom), "alice: room not encrypted");
	// Bob's keys may be uploaded after alice first queried them: she learns of them from
	// device_lists.changed in /sync.
	await waitDevice(aliceE, bobE);
	step("alice's device sees bob's device keys");
	step("bob is in the encrypted room");

	const secret = `secret ${suffix}`;
	got = waitMessage(bobE, e2eeRoom, secret);
	const sent = await aliceE.sendTextMessage(e2eeRoom, secret);
	step(`alice sent encrypted ${sent.event_id}`);
	ev = await got;
	check(ev.getWireType() === "m.room.encrypted", `wire type ${ev.getWireType()}, want m.room.encrypted`);
	check(!ev.isDecryptionFailure(), "decryption failure");
	check(ev.getContent().body === secret, `decrypted body ${JSON.stringify(ev.getContent().body)}`);
	check(ev.getSender() === aliceE.getUserId(), `sender ${ev.getSender()}`);
	step(`bob decrypted: ${JSON.stringify(ev.getContent().body)}`);

	// Tenant B on the same shard sees nothing of tenant A.
	const carol = await account(urlB, `carol${suffix}`);
	check(carol.getUserId().split(":")[1] !== aliceId.split(":")[1], `tenant B server name equals tenant A's: ${carol.getUserId()}`);
	const { joined_rooms: carolRooms } = await carol.getJoinedRooms();
	check(carolRooms.length === 0, `carol's joined_rooms: ${carolRooms}`);
	await expectMatrixError("carol joins tenant A's room", carol.joinRoom(plainRoom), [403, 404]);
	await expectMatrixError("carol reads tenant A's room", carol.createMessagesRequest(plainRoom, null, 10, "b"), [403, 404]);
	const pub = await carol.publicRooms({});
	check(!pub.chunk.some((r) => r.room_id === plainRoom || r.room_id === e2eeRoom), "tenant A's room in tenant B's directory");
	const carolSync = await carol.http.authedRequest("GET", "/sync", { timeout: "0" });
	const seenRooms = Object.keys(carolSync.rooms?.join || {}).concat(Object.keys(carolSync.rooms?.invite || {}));
	check(seenRooms.length === 0, `carol's sync lists rooms ${seenRooms}`);
	// A tenant A token is unknown on tenant B.
	const aliceOnB = sdk.createClient({ baseUrl: urlB, userId: aliceId, accessToken: alice.getAccessToken(), fetchFn: fetchAs("alice-on-B") });
	await expectMatrixError("alice's token on tenant B", aliceOnB.whoami(), [401]);
	step("tenant B is isolated from tenant A");

	aliceE.stopClient();
	bobE.stopClient();
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
