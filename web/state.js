// The state shared by the modules of the interface: what is on screen (S), the protocol client it comes from, and
// the render frame that batches redraws. It imports only herald-client.js; every other module imports it.
import { HeraldClient } from './herald-client.js';

export const ROLE_RANK = { member: 0, admin: 1, owner: 2 };

export const S = {
  convs: new Map(), // id -> conversation (see fromSummary in conversations.js)
  open: null, // id of the conversation on screen
  receipts: {}, // conversation id -> user id -> {delivered, read}: other members' positions, kept in storage
  presence: new Map(), // user id -> {status, last_seen}
  typing: new Map(), // conversation id -> Map(user id -> timer)
  mode: null, // composer: {kind: 'reply' | 'edit', seq}
  typingSentAt: 0,
  typingIn: null,
  uploads: new Map(), // key -> an upload started from the composer (see startUpload in uploads.js)
  blocked: new Set(), // ids of the users I block
};

/**
 * The few functions that modules low in the import graph must call but cannot import (that would make a cycle:
 * imports point from the entry to the features to the helpers). app.js plugs the real ones in before it starts.
 */
export const hooks = {
  /** The client's reload hook (conversation-view.js). */
  reload: async () => {},
  /** Draws what scheduleRender collected: flags list, header, messages, ticks, read (app.js). */
  render: (_dirty) => {},
  /** Opens a conversation, from a click in the list (conversation-view.js). */
  openConversation: (_id) => {},
  /** Redraws the members dialog (members-dialog.js). */
  renderMembers: () => {},
};

export const client = new HeraldClient({ reload: () => hooks.reload() });
globalThis.herald = client; // handy from the console

export const me = () => client.user?.id;

// ---- rendering: scheduling -------------------------------------------------------------------------------

let dirty = {};
let frame = 0;
export function scheduleRender(what) {
  Object.assign(dirty, what);
  if (!frame) frame = requestAnimationFrame(flushRender);
}

function flushRender() {
  frame = 0;
  const d = dirty;
  dirty = {};
  hooks.render(d);
}
