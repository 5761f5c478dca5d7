// herald-client.js: Herald's client protocol in one dependency-free ES module.
//
// - REST (docs/api.md): register, log in, refresh, conversations, history, members …, with the access token
//   refreshed before it expires (and once more on a 401), one refresh at a time (across tabs too, where the
//   Web Locks API exists), since a refresh token works once.
// - WebSocket (docs/protocol.md): one socket, authenticated with an `auth` first frame (the token stays out of
//   URLs), `sync {since: last_pos}` after every connect, `last_pos` kept in storage and advanced only after the
//   application has applied the event, `resync` handled by a reload hook, reconnection with exponential backoff
//   and jitter (1, 2, 4 … 30 s), `reconnect.after_ms` honoured, a token refresh after a 4401 close, an
//   application ping to notice dead sockets.
// - Outbox: every send is kept (in storage) with its client_msg_id until its `ack` or its own `message` event,
//   retried with the same client_msg_id after a reconnect, so a retry can never create a duplicate.
// - Media (docs/media.md): resumable uploads (PATCH in chunks at the server's offset, resumed after a failure),
//   polled until the pipeline has decided, and MediaInfo with signed URLs cached until they are about to expire.
//
// It runs in a browser as is, and in Node 20+ given a WebSocket class (e.g. the `ws` package) and a storage
// (see memoryStorage). docs/web-client.md documents it, with an example.

const RETRYABLE = new Set(['unavailable', 'rate_limited', 'disconnected', 'timeout']);

/** Bytes per PATCH of an upload: small enough that a failure costs little, large enough to be few requests. */
const UPLOAD_CHUNK = 1 << 20;
/** Failed PATCHes in a row after which an upload gives up. */
const UPLOAD_TRIES = 6;
/** A MediaInfo is fetched again this long before its signed URLs expire. */
const MEDIA_URL_MARGIN_MS = 120_000;

/**
 * An error answered by the server (`{code, message}`), or `disconnected` / `timeout` / `network` / `aborted`
 * locally. An upload the pipeline refused is `rejected`, with the server's `reason` (e.g. `malware`) and `detail`.
 */
export class HeraldError extends Error {
  constructor(code, message, { status = 0, retryAfterMs = null, reason = null, detail = null } = {}) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
    this.reason = reason;
    this.detail = detail;
  }
  /** Whether retrying the same request (a send: with the same client_msg_id) may succeed. */
  get retryable() {
    return RETRYABLE.has(this.code);
  }
}

/** A Storage-like object in memory, for Node or tests. */
export function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

/**
 * A client_msg_id: a UUIDv7, as the Rust SDK makes them. Its first 48 bits are the time in milliseconds, so ids
 * grow with time, which is what the server's idempotency keys are laid out for (random ids cost it more).
 */
export function newClientMsgId() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70; // version 7
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Waits `ms`, or rejects with `aborted` as soon as `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new HeraldError('aborted', 'cancelled'));
    const done = () => {
      signal?.removeEventListener('abort', stop);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const stop = () => {
      clearTimeout(timer);
      reject(new HeraldError('aborted', 'cancelled'));
    };
    signal?.addEventListener('abort', stop, { once: true });
  });
}

/**
 * The reconnect delay of attempt `attempt` (0, 1, 2 …): a random time between half and all of
 * min(30 s, 1 s × 2^attempt).
 */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(30_000, 1000 * 2 ** Math.min(attempt, 15));
  return Math.round(base / 2 + random() * (base / 2));
}

export class HeraldClient {
  /**
   * @param {object} [o]
   * @param {string} [o.baseUrl]  the server, e.g. "http://127.0.0.1:8080" (default: the page's origin)
   * @param {Storage} [o.storage] where the session, last_pos and the outbox are kept (default: localStorage)
   * @param {string} [o.storageKey] prefix of the storage keys (default "herald")
   * @param {Function} [o.WebSocket] the WebSocket class (default: globalThis.WebSocket)
   * @param {Function} [o.fetch]
   * @param {() => Promise<void>} [o.reload] reloads the application's state over REST: called after the first
   *   `hello` of this client (before `sync`) and on every `resync`. Events from then on are applied on top of it.
   * @param {number} [o.requestTimeoutMs] how long a WebSocket request waits for its answer (default 15 s)
   * @param {number} [o.pingIntervalMs] application ping interval, to notice a dead socket (default 25 s)
   */
  constructor(o = {}) {
    this.baseUrl = (o.baseUrl ?? globalThis.location?.origin ?? '').replace(/\/+$/, '');
    this.storage = o.storage ?? globalThis.localStorage ?? memoryStorage();
    this.key = o.storageKey ?? 'herald';
    this.WebSocket = o.WebSocket ?? globalThis.WebSocket;
    this.fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
    this.reload = o.reload ?? (async () => {});
    this.random = o.random ?? Math.random;
    this.requestTimeoutMs = o.requestTimeoutMs ?? 15_000;
    this.pingIntervalMs = o.pingIntervalMs ?? 25_000;

    this.handlers = new Map();
    this.session = this._load('session', null);
    this.users = new Map(); // id -> UserProfile (a cache)
    this.ws = null;
    this.wanted = false;
    this.status = 'offline';
    this.attempt = 0;
    this.reconnectHint = null;
    this.reloaded = false;
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.nextId = 0;
    this.refreshing = null;
    this.marks = new Map(); // "delivered|read:conv" -> {sent, want}
    this.mediaCache = new Map(); // media id -> {info, until} (ready MediaInfo, until its URLs near expiry) or {pending}
    this._restoreUserState();
  }

  // ---- events ---------------------------------------------------------------------------------------------

  /**
   * Subscribes to `type`; returns the unsubscribe function. Types:
   * `session` (the Session or null), `status` ({state, attempt, retryInMs, reason}: state is offline,
   * connecting, syncing, online or reconnecting), `hello`, `event` ({pos, event, live}), `synced`, `resync`,
   * `typing`, `presence`, `outbox` (the outbox entries), `ack` ({entry, ack}), `error` (an unsolicited error frame).
   */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }

  _emit(type, detail) {
    for (const fn of [...(this.handlers.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`herald-client: a "${type}" handler failed`, e);
      }
    }
  }

  _setStatus(state, extra = {}) {
    this.status = state;
    this._emit('status', { state, attempt: this.attempt, ...extra });
  }

  // ---- storage --------------------------------------------------------------------------------------------

  _load(name, fallback) {
    try {
      const raw = this.storage.getItem(`${this.key}:${name}`);
      return raw == null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  }

  _save(name, value) {
    try {
      if (value == null) this.storage.removeItem(`${this.key}:${name}`);
      else this.storage.setItem(`${this.key}:${name}`, JSON.stringify(value));
    } catch (e) {
      console.warn('herald-client: storage failed', e);
    }
  }

  /** Loads a value the application keeps for the logged-in user (e.g. receipts it has seen). */
  loadUserData(name, fallback = null) {
    return this.session ? this._load(`${this.session.user.id}:${name}`, fallback) : fallback;
  }

  saveUserData(name, value) {
    if (this.session) this._save(`${this.session.user.id}:${name}`, value);
  }

  _restoreUserState() {
    this.lastPos = this.loadUserData('pos', null);
    this.outbox = this.loadUserData('outbox', []).map((e) => ({ ...e, state: e.state === 'failed' ? 'failed' : 'pending', inFlight: false }));
  }

  _savePos() {
    this.saveUserData('pos', this.lastPos);
  }

  _saveOutbox() {
    this.saveUserData('outbox', this.outbox.map(({ inFlight, ...e }) => e));
    this._emit('outbox', this.outbox.slice());
  }

  // ---- sessions -------------------------------------------------------------------------------------------

  get user() {
    return this.session?.user ?? null;
  }

  _setSession(session) {
    if (session && !session.obtained_at) session = { ...session, obtained_at: Date.now() };
    const sameUser = session && this.session && session.user.id === this.session.user.id;
    this.session = session;
    this._save('session', session);
    if (session) this.users.set(session.user.id, session.user);
    if (!sameUser) {
      this.reloaded = false;
      this.mediaCache.clear();
      this._restoreUserState();
    }
    this._emit('session', session);
  }

  async register(username, password, deviceName) {
    const s = await this.api('POST', '/accounts', { username, password, ...(deviceName ? { device_name: deviceName } : {}) }, { auth: false });
    this._setSession(s);
    return s;
  }

  async login(username, password, deviceName) {
    const s = await this.api('POST', '/sessions', { username, password, ...(deviceName ? { device_name: deviceName } : {}) }, { auth: false });
    this._setSession(s);
    return s;
  }

  /** Logs this device out on the server (best effort) and forgets everything kept for it. */
  async logout() {
    this.disconnect();
    if (this.session) {
      try {
        await this.api('DELETE', '/sessions/current');
      } catch {
        /* the device is forgotten locally all the same */
      }
      for (const name of ['pos', 'outbox']) this.saveUserData(name, null);
    }
    this._forget();
  }

  _forget() {
    this.disconnect();
    this.mediaCache.clear();
    this.session = null;
    this._save('session', null);
    this.lastPos = null;
    this.outbox = [];
    this.reloaded = false;
    this._emit('session', null);
  }

  /**
   * A valid access token, refreshed first when it is about to expire: within 30 s, or within a third of its
   * lifetime when that is shorter.
   */
  async accessToken() {
    if (!this.session) throw new HeraldError('unauthorized', 'not logged in', { status: 401 });
    const s = this.session;
    const margin = Math.min(30_000, (s.access_expires_at - (s.obtained_at ?? 0)) / 3);
    if (s.access_expires_at - Date.now() > margin) return s.access_token;
    await this.refresh(s.access_token);
    return this.session.access_token;
  }

  /**
   * Exchanges the refresh token for new tokens. `stale` is the access token that was found expired or refused:
   * if another tab already replaced it (the stored session differs), that session is adopted instead, because
   * presenting a used refresh token revokes the device.
   */
  async refresh(stale = this.session?.access_token) {
    if (this.refreshing) return this.refreshing;
    const run = async () => {
      const stored = this._load('session', null);
      if (stored && this.session && stored.user.id === this.session.user.id && stored.access_token !== stale) {
        this.session = stored;
        return;
      }
      if (!this.session) throw new HeraldError('unauthorized', 'not logged in', { status: 401 });
      try {
        const s = await this.api('POST', '/sessions/refresh', { refresh_token: this.session.refresh_token }, { auth: false });
        this._setSession(s);
      } catch (e) {
        if (e.status === 401) this._forget();
        throw e;
      }
    };
    const locks = globalThis.navigator?.locks;
    this.refreshing = (locks ? locks.request(`${this.key}:refresh`, run) : run()).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  // ---- REST -----------------------------------------------------------------------------------------------

  /** One REST call under /api/v1. Resolves with the parsed body (null for 204), rejects with HeraldError. */
  async api(method, path, body, { auth = true } = {}) {
    const headers = body === undefined ? {} : { 'Content-Type': 'application/json' };
    const { data } = await this._call(method, path, { headers, body: body === undefined ? undefined : JSON.stringify(body), auth });
    return data;
  }

  /**
   * api() for any body (a Blob for upload bytes) and extra headers: `{data, headers}`, where `headers` are the
   * response's. The body must be readable twice (a string or a Blob), since a 401 sends it again. With `blob`, a
   * successful answer's `data` is its body as a Blob.
   */
  async _call(method, path, { headers = {}, body, auth = true, signal, blob = false, retried = false } = {}) {
    headers = { ...headers };
    let token;
    if (auth) {
      token = await this.accessToken();
      headers.Authorization = `Bearer ${token}`;
    }
    let res;
    try {
      res = await this.fetch(`${this.baseUrl}/api/v1${path}`, { method, headers, body, signal });
    } catch (e) {
      if (signal?.aborted) throw new HeraldError('aborted', 'cancelled');
      throw new HeraldError('network', `cannot reach the server (${e.message})`);
    }
    if (res.status === 401 && auth && !retried) {
      await this.refresh(token);
      return this._call(method, path, { headers, body, auth, signal, blob, retried: true });
    }
    if (res.status === 204) return { data: null, headers: res.headers };
    if (res.ok && blob) return { data: await res.blob(), headers: res.headers };
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    if (!res.ok) {
      throw new HeraldError(data?.code ?? 'internal', data?.message ?? `HTTP ${res.status}`, { status: res.status, retryAfterMs: data?.retry_after_ms ?? null });
    }
    return { data, headers: res.headers };
  }

  me() {
    return this.api('GET', '/me');
  }

  async findUser(username) {
    const u = await this.api('GET', `/users?username=${encodeURIComponent(username.trim())}`);
    this.users.set(u.id, u);
    return u;
  }

  /** A user's profile, cached. */
  async userProfile(id) {
    if (this.users.has(id)) return this.users.get(id);
    const u = await this.api('GET', `/users/${id}`);
    this.users.set(id, u);
    return u;
  }

  conversations({ limit, cursor } = {}) {
    const q = new URLSearchParams();
    if (limit) q.set('limit', limit);
    if (cursor) q.set('cursor', cursor);
    return this.api('GET', `/conversations${String(q) ? `?${q}` : ''}`);
  }

  /** Every page of the conversation list. */
  async allConversations() {
    const all = [];
    let cursor = null;
    do {
      const page = await this.conversations({ limit: 200, cursor });
      all.push(...page.conversations);
      cursor = page.next_cursor;
    } while (cursor);
    return all;
  }

  conversation(id) {
    return this.api('GET', `/conversations/${id}`);
  }

  createDirect(userId) {
    return this.api('POST', '/conversations', { kind: 'direct', user_id: userId });
  }

  createGroup(title, memberIds = []) {
    return this.api('POST', '/conversations', { kind: 'group', title, members: memberIds });
  }

  renameGroup(id, title) {
    return this.api('PATCH', `/conversations/${id}`, { title });
  }

  addMember(id, userId) {
    return this.api('POST', `/conversations/${id}/members`, { user_id: userId });
  }

  /** Removes a member; the caller's own id means leaving. */
  removeMember(id, userId) {
    return this.api('DELETE', `/conversations/${id}/members/${userId}`);
  }

  setRole(id, userId, role) {
    return this.api('PATCH', `/conversations/${id}/members/${userId}`, { role });
  }

  /** Whom the user blocks: `[{user_id, since}]`. */
  blocks() {
    return this.api('GET', '/blocks');
  }

  /** Blocks a user: no direct messages or invitations either way, and neither sees the other's typing or presence. */
  block(userId) {
    return this.api('PUT', `/blocks/${userId}`);
  }

  unblock(userId) {
    return this.api('DELETE', `/blocks/${userId}`);
  }

  /** Reports a message the user can read to the server's admins; `reason`: spam, harassment, illegal or other. */
  reportMessage(conversationId, seq, reason, comment = '') {
    return this.api('POST', '/reports', { target: { kind: 'message', conversation_id: conversationId, seq }, reason, comment });
  }

  /** Reports another user to the server's admins. */
  reportUser(userId, reason, comment = '') {
    return this.api('POST', '/reports', { target: { kind: 'user', user_id: userId }, reason, comment });
  }

  // ----- the server's admins (`me().admin`) -----

  /** Reports, newest first: `{reports, next_before?}`; `state`: open or resolved (both when absent). */
  adminReports({ state, before, limit } = {}) {
    const q = new URLSearchParams();
    if (state) q.set('state', state);
    if (before) q.set('before', before);
    if (limit) q.set('limit', String(limit));
    const qs = q.toString();
    return this.api('GET', `/admin/reports${qs ? `?${qs}` : ''}`);
  }

  resolveReport(id, note = '') {
    return this.api('POST', `/admin/reports/${id}/resolve`, { note });
  }

  /** An account as admins see it: `{user, suspension?, devices}`. */
  adminUser(id) {
    return this.api('GET', `/admin/users/${id}`);
  }

  /** Suspends an account: every session of it closes at once, and it cannot log in until the suspension is lifted. */
  suspendUser(id, reason = '') {
    return this.api('POST', `/admin/users/${id}/suspend`, { reason });
  }

  unsuspendUser(id) {
    return this.api('POST', `/admin/users/${id}/unsuspend`, {});
  }

  /** Everything the server keeps of the user, as a ZIP archive: `{blob, filename}`. */
  async exportData() {
    const { data, headers } = await this._call('GET', '/me/export', { blob: true });
    const filename = /filename="([^"]+)"/.exec(headers.get('Content-Disposition') ?? '')?.[1] ?? 'herald-export.zip';
    return { blob: data, filename };
  }

  /** Deletes an account: its sessions close, its personal data is erased and it leaves its groups. `{user, groups_left, messages_removed}`. */
  deleteUser(id) {
    return this.api('DELETE', `/admin/users/${id}`);
  }

  /** A page of history: `{messages, next, last_seq}`. `dir: "backward"` pages from `from` (default: newest) down. */
  history(id, { from, dir = 'backward', limit = 50 } = {}) {
    const q = new URLSearchParams({ dir, limit: String(limit) });
    if (from != null) q.set('from', String(from));
    return this.api('GET', `/conversations/${id}/messages?${q}`);
  }

  cursor(id) {
    return this.api('GET', `/conversations/${id}/cursor`);
  }

  /** A thread: `{conversation_id, root, replies, last_seq, read, unread}` (`read` and `unread` are this user's). */
  thread(id, root) {
    return this.api('GET', `/conversations/${id}/threads/${root}`);
  }

  /** A page of a thread's replies, `{messages, next, last_seq}`, paged as history (default: forward from the first). */
  threadReplies(id, root, { from, dir = 'forward', limit = 50 } = {}) {
    const q = new URLSearchParams({ dir, limit: String(limit) });
    if (from != null) q.set('from', String(from));
    return this.api('GET', `/conversations/${id}/threads/${root}/messages?${q}`);
  }

  /** Moves this user's read position in the thread to reply `seq` (forward only); resolves with the thread. */
  markThreadRead(id, root, seq) {
    return this.api('PUT', `/conversations/${id}/threads/${root}/read`, { read: seq });
  }

  /**
   * Full-text search over the messages this user can read: `{results: [{message, snippet}], next}`, best first.
   * Every word of `q` must start a word of the message; `snippet` is plain text in pieces, `hit` on the matches.
   */
  search(q, { conversation, offset, limit = 20 } = {}) {
    const params = new URLSearchParams({ q, limit: String(limit) });
    if (conversation) params.set('conversation', conversation);
    if (offset) params.set('offset', String(offset));
    return this.api('GET', `/search?${params}`);
  }

  // ---- media ----------------------------------------------------------------------------------------------

  /**
   * Uploads `file` (a File or Blob) and waits until the server's pipeline has decided: resolves with the ready
   * MediaInfo (its `id` is what a message attaches), rejects with HeraldError `rejected` (with `reason` and
   * `detail`) when it was refused, or with the error that stopped the upload.
   *
   * The bytes go in PATCHes of `chunkSize` at the server's offset. A failed PATCH is retried (with backoff, at
   * most 6 failures in a row) from the offset the server reports, so what arrived is never sent twice.
   * `onProgress({phase, sent, total, id})` is called as bytes are accepted (`phase: 'uploading'`) and while the
   * server checks them (`phase: 'processing'`, with the upload's `state`). Aborting `signal` stops the upload and
   * deletes it on the server (best effort).
   */
  async upload(file, { onProgress, signal, filename = file.name, contentType = file.type, chunkSize = UPLOAD_CHUNK } = {}) {
    const total = file.size;
    const report = (p) => {
      try {
        onProgress?.({ total, ...p });
      } catch (e) {
        console.error('herald-client: an onProgress handler failed', e);
      }
    };
    const created = await this.api('POST', '/uploads', {
      size: total,
      ...(filename ? { filename } : {}),
      ...(contentType ? { content_type: contentType } : {}),
    });
    const id = created.id;
    try {
      let sent = created.received ?? 0;
      let failures = 0;
      report({ phase: 'uploading', sent, id });
      while (sent < total) {
        if (signal?.aborted) throw new HeraldError('aborted', 'cancelled');
        try {
          const { data, headers } = await this._call('PATCH', `/uploads/${id}`, {
            headers: { 'Upload-Offset': String(sent), 'Content-Type': 'application/offset+octet-stream' },
            body: file.slice(sent, Math.min(total, sent + chunkSize)),
            signal,
          });
          sent = Number(headers.get('Upload-Offset') ?? data.received);
          failures = 0;
          report({ phase: 'uploading', sent, id });
          if (data.state !== 'pending') break;
        } catch (e) {
          // Too large, gone, or cancelled: retrying cannot help. (A 409 is an offset that moved: ask for it.)
          if (e.code === 'aborted' || (e.status >= 400 && e.status < 500 && e.status !== 409 && e.status !== 429)) throw e;
          failures += 1;
          if (failures >= UPLOAD_TRIES) throw e;
          await sleep(e.retryAfterMs ?? backoffDelay(failures - 1, this.random), signal);
          const info = await this._uploadState(id, signal);
          if (info.state !== 'pending') break;
          sent = info.received;
          report({ phase: 'uploading', sent, id });
        }
      }
      // The last byte is in: poll until the pipeline has decided (quickly at first; videos take longer).
      for (let wait = 200; ; wait = Math.min(2000, wait * 1.5)) {
        const info = await this._uploadState(id, signal, `/media/${id}`);
        if (info.state === 'ready') return this._cacheMedia(info);
        if (info.state === 'rejected') {
          throw new HeraldError('rejected', `refused: ${info.reason ?? 'failed'}`, { reason: info.reason ?? 'failed', detail: info.detail ?? null });
        }
        report({ phase: 'processing', sent: total, id, state: info.state });
        await sleep(wait, signal);
      }
    } catch (e) {
      if (e.code === 'aborted') this.deleteUpload(id).catch(() => {});
      throw e;
    }
  }

  /** GET of an upload (retried while the network or the server fails: the upload is still there). */
  async _uploadState(id, signal, path = `/uploads/${id}`) {
    for (let attempt = 0; ; attempt++) {
      try {
        const { data, headers } = await this._call('GET', path, { signal });
        const offset = headers.get('Upload-Offset');
        return offset == null ? data : { ...data, received: Number(offset) };
      } catch (e) {
        if (e.code === 'aborted' || (e.status >= 400 && e.status < 500 && e.status !== 429) || attempt >= UPLOAD_TRIES) throw e;
        await sleep(e.retryAfterMs ?? backoffDelay(attempt, this.random), signal);
      }
    }
  }

  /**
   * The MediaInfo of an upload this user may see (its own, or attached in one of its conversations), with the
   * signed URLs of its variants made absolute. Cached per id until shortly before the URLs expire;
   * `fresh: true` asks the server again (e.g. after a URL answered 403 or 410).
   */
  async media(id, { fresh = false } = {}) {
    const hit = this.mediaCache.get(id);
    if (hit && !fresh) {
      if (hit.pending) return hit.pending;
      if (hit.until > Date.now()) return hit.info;
    }
    const pending = this.api('GET', `/media/${id}`).then(
      (info) => {
        if (info.state === 'ready') return this._cacheMedia(info);
        this.mediaCache.delete(id);
        return info;
      },
      (e) => {
        this.mediaCache.delete(id);
        throw e;
      },
    );
    this.mediaCache.set(id, { pending });
    return pending;
  }

  /** The cached MediaInfo of `id` if its URLs are still good, else null (no request: for rendering at once). */
  cachedMedia(id) {
    const hit = this.mediaCache.get(id);
    return hit?.info && hit.until > Date.now() ? hit.info : null;
  }

  _cacheMedia(info) {
    const variants = {};
    for (const [name, v] of Object.entries(info.variants ?? {})) {
      variants[name] = { ...v, url: v.url?.startsWith('/') ? `${this.baseUrl}${v.url}` : v.url };
    }
    const absolute = { ...info, variants };
    const expires = info.urls_expire_at ?? Date.now();
    this.mediaCache.set(info.id, { info: absolute, until: expires - MEDIA_URL_MARGIN_MS });
    return absolute;
  }

  /** Removes an upload no message attaches (frees its quota). */
  deleteUpload(id) {
    this.mediaCache.delete(id);
    return this.api('DELETE', `/uploads/${id}`);
  }

  /** This user's storage: `{used_bytes, quota_bytes}`. */
  mediaUsage() {
    return this.api('GET', '/media/usage');
  }

  // ---- the WebSocket ---------------------------------------------------------------------------------------

  get online() {
    return this.status === 'online';
  }

  /** Connects, and stays connected (reconnecting with backoff) until disconnect() or logout(). */
  connect() {
    if (!this.session) throw new HeraldError('unauthorized', 'log in first', { status: 401 });
    this.wanted = true;
    if (!this.ws && !this.timer) this._open();
  }

  disconnect() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.timer = null;
    this._drop(1000, 'client closed');
    this._setStatus('offline');
  }

  /** Skips the wait of a scheduled reconnect (e.g. when the browser says it is back online). */
  reconnectNow() {
    if (!this.wanted) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
      this._open();
    } else if (this.ws) {
      this._checkAlive();
    }
  }

  /** Closes the current socket as if the network had dropped it; the client reconnects (e.g. the OS went offline). */
  interrupt(reason = 'network lost') {
    if (this.ws) this._closed(this.ws, { code: 1006, reason });
  }

  async _open() {
    this.timer = null;
    this._setStatus(this.attempt ? 'reconnecting' : 'connecting', { retryInMs: 0 });
    let token;
    try {
      token = await this.accessToken();
    } catch (e) {
      if (e.status === 401) return; // logged out: _forget() already told the application
      return this._schedule(e.message);
    }
    if (!this.wanted || this.ws) return;
    // The token goes in the first frame, out of URLs and logs; the user id is only a routing hint, for a proxy
    // that keeps each user on one node (docs/protocol.md), and the server refuses it if it is not the token's.
    const user = this.session?.user?.id;
    const url = this.baseUrl.replace(/^http/, 'ws') + '/ws?v=1' + (user ? '&user=' + encodeURIComponent(user) : '');
    const ws = new this.WebSocket(url);
    this.ws = ws;
    this.hello = null;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
    ws.onmessage = (m) => this._frame(ws, typeof m.data === 'string' ? m.data : String(m.data));
    ws.onclose = (e) => this._closed(ws, e);
    ws.onerror = () => {}; // a close follows
  }

  /** Forgets the socket `ws` (if current) and rejects what waited on it. */
  _drop(code, reason) {
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.pinger);
    clearTimeout(this.pongTimer);
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new HeraldError('disconnected', 'the connection closed before an answer'));
    }
    this.pending.clear();
    for (const e of this.outbox) e.inFlight = false;
    for (const m of this.marks.values()) m.sent = Math.min(m.sent, m.acked ?? 0);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        /* already closed */
      }
    }
  }

  _closed(ws, e) {
    if (ws !== this.ws) return;
    this._drop(1000, '');
    if (!this.wanted) return;
    const code = e.code ?? 1006;
    if (code === 4401) {
      // The token was refused, or the device logged out / was revoked: refresh before trying again.
      this.refresh().then(
        () => this._schedule('authentication failed', { code }),
        (err) => {
          if (err.status !== 401) this._schedule(err.message, { code });
        },
      );
      return;
    }
    this._schedule(e.reason || `closed (${code})`, { code });
  }

  _schedule(reason, { code } = {}) {
    if (!this.wanted || this.timer) return;
    let delay = backoffDelay(this.attempt, this.random);
    if (this.reconnectHint != null) {
      delay = this.reconnectHint;
      this.reconnectHint = null;
    }
    this.attempt += 1;
    this._setStatus('reconnecting', { retryInMs: delay, reason, code });
    this.timer = setTimeout(() => this._open(), delay);
  }

  _checkAlive() {
    if (!this.ws || this.pongTimer || this.ws.readyState !== 1) return;
    this.ws.send(JSON.stringify({ type: 'ping', id: 'alive' }));
    const ws = this.ws;
    this.pongTimer = setTimeout(() => this._closed(ws, { code: 1006, reason: 'no answer to ping' }), 10_000);
  }

  async _frame(ws, raw) {
    if (ws !== this.ws) return;
    let f;
    try {
      f = JSON.parse(raw);
    } catch {
      return;
    }
    switch (f.type) {
      case 'hello':
        return this._hello(ws, f);
      case 'event':
        if (this.lastPos != null && f.pos <= this.lastPos) return; // already applied
        this._emit('event', { pos: f.pos, event: f.event, live: this.status === 'online' });
        this.lastPos = f.pos;
        this._savePos();
        if (f.event.kind === 'message' && f.event.message.sender === this.session?.user.id) {
          // The sender's own `message` event (which can come before the ack) settles its outbox entry too.
          this._settle(f.event.message.conversation_id, f.event.message.client_msg_id, null);
        }
        return;
      case 'synced':
        if (this.status !== 'online') {
          this.attempt = 0;
          this._setStatus('online');
          this._flush();
        }
        this._emit('synced', f);
        return;
      case 'resync':
        return this._resync(ws, f);
      case 'typing':
      case 'presence':
        if (f.id && this._answer(f)) return;
        this._emit(f.type, f);
        return;
      case 'pong':
        if (f.id === 'alive') {
          clearTimeout(this.pongTimer);
          this.pongTimer = null;
          return;
        }
        this._answer(f);
        return;
      case 'reconnect':
        this.reconnectHint = f.after_ms;
        return;
      case 'error':
        if (f.id && this.pending.has(f.id)) {
          const p = this.pending.get(f.id);
          this.pending.delete(f.id);
          clearTimeout(p.timer);
          p.reject(new HeraldError(f.code, f.message, { retryAfterMs: f.retry_after_ms ?? null }));
        } else {
          this._emit('error', f);
        }
        return;
      default:
        this._answer(f);
    }
  }

  async _hello(ws, hello) {
    this.hello = hello;
    this._emit('hello', hello);
    this._setStatus('syncing');
    this.pinger = setInterval(() => this._checkAlive(), this.pingIntervalMs);
    if (!this.reloaded || this.lastPos == null) {
      // First connection of this client: the application loads its state over REST after hello, then the feed
      // is followed from the stored position (events applied twice are harmless), or from hello.pos.
      try {
        await this.reload();
      } catch (e) {
        if (ws === this.ws) this._closed(ws, { code: 1011, reason: `reload failed: ${e.message}` });
        return;
      }
      if (ws !== this.ws) return;
      this.reloaded = true;
      if (this.lastPos == null) {
        this.lastPos = hello.pos;
        this._savePos();
      }
    }
    ws.send(JSON.stringify({ type: 'sync', since: this.lastPos }));
  }

  async _resync(ws, f) {
    this._emit('resync', f);
    for (;;) {
      try {
        await this.reload();
        break;
      } catch (e) {
        if (ws !== this.ws) return;
        await new Promise((r) => setTimeout(r, 2000)); // retry the reload; never sync from the old position
      }
    }
    if (ws !== this.ws) return;
    this.lastPos = f.pos;
    this._savePos();
    ws.send(JSON.stringify({ type: 'sync', since: f.pos }));
  }

  _answer(f) {
    const p = f.id && this.pending.get(f.id);
    if (!p) return false;
    this.pending.delete(f.id);
    clearTimeout(p.timer);
    p.resolve(f);
    return true;
  }

  /** Sends a request frame and waits for its answer (matched by id). */
  request(frame) {
    if (!this.ws || this.ws.readyState !== 1 || !this.hello) {
      return Promise.reject(new HeraldError('disconnected', 'not connected'));
    }
    const id = `q${++this.nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HeraldError('timeout', 'no answer from the server'));
      }, this.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Sends a frame that has no answer, if connected. Returns whether it was sent. */
  fire(frame) {
    if (!this.ws || this.ws.readyState !== 1 || !this.hello) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // ---- the outbox ------------------------------------------------------------------------------------------

  /**
   * Sends a message (`threadRoot`: as a reply in that message's thread). Returns its outbox entry
   * `{client_msg_id, conversation_id, body, reply_to, thread_root, attachments,
   * attachment_info, state}` at once; `state` is `pending` until the ack (then the entry leaves the outbox, see
   * the `ack` event) or `failed` (with `error`), after which retry(client_msg_id) sends it again with the same
   * client_msg_id.
   *
   * `attachments` (at most 10) are ready uploads: media ids, or the MediaInfo upload() resolved with. The ids go
   * in the `send` frame; from MediaInfos the entry also keeps `attachment_info` (the message's `Attachment`
   * snapshots: `{media_id, content_type, size, filename, width, height}`) to show the message before it is stored.
   */
  send(conversationId, body, { replyTo = null, threadRoot = null, attachments = [] } = {}) {
    const entry = {
      client_msg_id: newClientMsgId(),
      conversation_id: conversationId,
      body,
      reply_to: replyTo,
      thread_root: threadRoot,
      state: 'pending',
      created_at: Date.now(),
      inFlight: false,
    };
    if (attachments.length) {
      entry.attachments = attachments.map((a) => (typeof a === 'string' ? a : a.id));
      entry.attachment_info = attachments.map((a) => {
        const info = typeof a === 'string' ? this.cachedMedia(a) : a;
        if (!info) return { media_id: a };
        return { media_id: info.id, content_type: info.content_type, size: info.size, filename: info.filename, width: info.width, height: info.height };
      });
    }
    this.outbox.push(entry);
    this._saveOutbox();
    this._transmit(entry);
    return entry;
  }

  retry(clientMsgId) {
    const e = this.outbox.find((x) => x.client_msg_id === clientMsgId);
    if (!e) return;
    e.state = 'pending';
    e.error = null;
    e.tries = 0;
    this._saveOutbox();
    this._transmit(e);
  }

  /** Drops a failed message from the outbox (it was never stored: it had no ack). */
  discard(clientMsgId) {
    this.outbox = this.outbox.filter((x) => x.client_msg_id !== clientMsgId);
    this._saveOutbox();
  }

  /** Called for every event: the sender's own `message` event settles its entry like the ack does. */
  _settle(conversationId, clientMsgId, ack) {
    const i = this.outbox.findIndex((x) => x.client_msg_id === clientMsgId && x.conversation_id === conversationId);
    if (i < 0) return;
    const [entry] = this.outbox.splice(i, 1);
    this._saveOutbox();
    this._emit('ack', { entry, ack });
  }

  _flush() {
    for (const e of this.outbox) if (e.state === 'pending') this._transmit(e);
    for (const [k, m] of this.marks) if (m.want > m.sent) this._mark(k);
  }

  async _transmit(e) {
    if (e.inFlight || e.state !== 'pending' || !this.online) return; // sent after the next `synced`
    e.inFlight = true;
    try {
      const ack = await this.request({
        type: 'send',
        conversation_id: e.conversation_id,
        client_msg_id: e.client_msg_id,
        body: e.body,
        ...(e.reply_to ? { reply_to: e.reply_to } : {}),
        ...(e.thread_root ? { thread_root: e.thread_root } : {}),
        ...(e.attachments?.length ? { attachments: e.attachments } : {}),
      });
      e.inFlight = false;
      this._settle(e.conversation_id, e.client_msg_id, ack);
    } catch (err) {
      e.inFlight = false;
      if (!this.outbox.includes(e)) return; // settled by its event meanwhile
      if (err.code === 'disconnected') return; // stays pending: resent once synced again
      e.tries = (e.tries ?? 0) + 1;
      if ((err.code === 'rate_limited' || err.code === 'unavailable') && e.tries < 4) {
        setTimeout(() => this._transmit(e), err.retryAfterMs ?? backoffDelay(e.tries, this.random));
        return;
      }
      e.state = 'failed';
      e.error = { code: err.code, message: err.message };
      this._saveOutbox();
    }
  }

  // ---- requests over the socket (with a REST fallback where one exists) ---------------------------------------

  async _either(frame, rest) {
    if (this.online) {
      try {
        return await this.request(frame);
      } catch (e) {
        if (e.code !== 'disconnected') throw e;
      }
    }
    return rest();
  }

  async edit(conversationId, seq, body) {
    const r = await this._either({ type: 'edit', conversation_id: conversationId, seq, body }, () =>
      this.api('PATCH', `/conversations/${conversationId}/messages/${seq}`, { body }).then((message) => ({ message })),
    );
    return r.message;
  }

  async deleteMessage(conversationId, seq) {
    const r = await this._either({ type: 'delete', conversation_id: conversationId, seq }, () =>
      this.api('DELETE', `/conversations/${conversationId}/messages/${seq}`).then((message) => ({ message })),
    );
    return r.message;
  }

  async react(conversationId, seq, emoji, add = true) {
    const r = await this._either({ type: 'react', conversation_id: conversationId, seq, emoji, add }, () =>
      this.api(add ? 'PUT' : 'DELETE', `/conversations/${conversationId}/messages/${seq}/reactions/${encodeURIComponent(emoji)}`).then((message) => ({ message })),
    );
    return r.message;
  }

  /**
   * Moves this device's delivered (or read) position forward to `seq`. Coalesced: only the highest position is
   * sent, one request at a time per conversation, and what could not be sent is sent after the next `synced`.
   */
  markDelivered(conversationId, seq) {
    this._want(`delivered|${conversationId}`, seq);
  }

  markRead(conversationId, seq) {
    this._want(`read|${conversationId}`, seq);
  }

  _want(k, seq) {
    const m = this.marks.get(k) ?? { sent: 0, want: 0, busy: false };
    this.marks.set(k, m);
    if (seq <= m.want) return;
    m.want = seq;
    this._mark(k);
  }

  async _mark(k) {
    const m = this.marks.get(k);
    if (m.busy || m.want <= m.sent || !this.online) return;
    const [type, conversation_id] = k.split('|');
    m.busy = true;
    const seq = m.want;
    m.sent = seq;
    try {
      await this.request({ type, conversation_id, seq });
      m.acked = Math.max(m.acked ?? 0, seq);
    } catch (e) {
      if (e.code === 'disconnected') m.sent = m.acked ?? 0;
      else if (e.retryable) {
        m.sent = m.acked ?? 0;
        await new Promise((r) => setTimeout(r, e.retryAfterMs ?? 1000));
      }
      // anything else (e.g. not_found after leaving) is dropped
    } finally {
      m.busy = false;
    }
    if (m.want > m.sent) this._mark(k);
  }

  /** Shows (or stops showing) this user as typing in a conversation. Best effort, not answered. */
  typing(conversationId, active) {
    return this.fire({ type: 'typing', conversation_id: conversationId, active });
  }

  /** Sets this user's status: "online" or "away". */
  setPresence(status) {
    return this.fire({ type: 'presence', status });
  }

  /** The presence of users who share a conversation with this user: `[{user_id, status, last_seen?}]`. */
  async queryPresence(userIds) {
    const users = [];
    for (let i = 0; i < userIds.length; i += 500) {
      const r = await this.request({ type: 'presence_query', user_ids: userIds.slice(i, i + 500) });
      users.push(...r.users);
    }
    return users;
  }
}
