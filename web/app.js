// Herald's web client: the entry module. Everything that speaks to the server is in herald-client.js; the user
// interface is split by concern into the modules below (docs/web-client.md lists them), which import each other
// only downwards (features, then helpers, then state.js). This one plugs state.js's hooks in and wires the
// client's events and the page's controls to the features.
import { $, toast } from './dom.js';
import { S, client, hooks, me } from './state.js';
import { onPresence } from './presence.js';
import { onTyping, sendTyping } from './typing.js';
import { checkRead, loadOlder, markRuns, renderPending, renderTicks, rerenderMessages, scrollToBottom } from './message-list.js';
import { applyEvent, applyMessage } from './conversations.js';
import { renderList } from './conversation-list.js';
import { autosize, setMode, submitComposer } from './composer.js';
import { onUploadAction, startUpload } from './uploads.js';
import { closeConversation, openConversation, reload, renderHeader, toggleBlock } from './conversation-view.js';
import { onMessageAction, onMessagesKey } from './message-actions.js';
import { newChat, newGroup, openDialog, openReportUser, sendReport, wireDialog } from './dialogs.js';
import { deleteAccount, lookUpAccount, openAdmin, suspendAccount, unsuspendAccount } from './admin-dialog.js';
import { exportData } from './export-data.js';
import { addMembers, leaveGroup, openMembers, renderMembers } from './members-dialog.js';
import { onStatus } from './connection.js';
import { closeThread, onThreadAction, renderThread, submitThread } from './threads.js';
import { clearSearch, moreResults, onResultClick, onSearchInput, submitSearch } from './search.js';
import { onAuth, showApp, showAuth } from './session.js';

// ---- rendering -------------------------------------------------------------------------------------------

/** scheduleRender's frame: the parts of the screen that were asked for. */
function render(d) {
  if (d.list) renderList();
  const c = S.convs.get(S.open);
  if (c) {
    if (d.header) renderHeader(c);
    if (d.messages) rerenderMessages(c);
    else if (d.ticks) renderTicks(c);
    markRuns();
    if (d.read) checkRead();
  }
}

// ---- wiring --------------------------------------------------------------------------------------------

function init() {
  Object.assign(hooks, { reload, render, openConversation, renderMembers });

  client.on('event', applyEvent);
  client.on('typing', onTyping);
  client.on('presence', onPresence);
  client.on('status', onStatus);
  client.on('outbox', () => {
    const c = S.convs.get(S.open);
    if (c) renderPending(c);
    renderThread();
  });
  client.on('ack', ({ entry, ack }) => {
    if (ack && !S.convs.get(entry.conversation_id)?.msgs?.has(ack.seq)) {
      // The ack came before the message's event: show it as stored now; the event replaces it later.
      applyMessage(
        {
          conversation_id: entry.conversation_id,
          seq: ack.seq,
          message_id: ack.message_id,
          sender: me(),
          sender_device: client.session.device_id,
          client_msg_id: entry.client_msg_id,
          body: entry.body,
          ...(entry.reply_to ? { reply_to: entry.reply_to } : {}),
          ...(entry.thread_root ? { thread_root: entry.thread_root } : {}),
          ...(entry.attachment_info?.length ? { attachments: entry.attachment_info } : {}),
          sent_at: ack.sent_at,
          deleted: false,
        },
        true,
      );
    }
  });
  client.on('session', (s) => {
    if (!s) showAuth();
    else if ($('app-view').hidden) showApp();
  });
  client.on('error', (f) => {
    if (f.code !== 'rate_limited') console.warn('herald:', f.code, f.message);
  });

  $('auth-form').addEventListener('submit', onAuth);
  $('logout').addEventListener('click', async () => {
    client.saveUserData('receipts', null);
    await client.logout();
  });
  $('export-btn').addEventListener('click', exportData);
  $('conn-retry').addEventListener('click', () => client.reconnectNow());
  // The skip link goes to the message box when a conversation is open, else to the conversation list.
  document.querySelector('.skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    const input = $('composer-input');
    if (!$('chat-pane').hidden && !input.disabled) input.focus();
    else ($('conv-list').querySelector('.conv') ?? $('new-chat')).focus();
  });
  $('new-chat').addEventListener('click', () => openDialog('dlg-chat'));
  $('new-group').addEventListener('click', () => openDialog('dlg-group'));
  $('form-chat').addEventListener('submit', newChat);
  $('form-group').addEventListener('submit', newGroup);
  $('form-report').addEventListener('submit', sendReport);
  $('block-btn').addEventListener('click', toggleBlock);
  $('report-user-btn').addEventListener('click', () => openReportUser(S.convs.get(S.open)?.peer));
  $('admin-btn').addEventListener('click', openAdmin);
  $('form-admin-user').addEventListener('submit', lookUpAccount);
  $('admin-suspend').addEventListener('click', suspendAccount);
  $('admin-unsuspend').addEventListener('click', unsuspendAccount);
  $('admin-delete').addEventListener('click', deleteAccount);
  $('members-btn').addEventListener('click', openMembers);
  $('form-add-member').addEventListener('submit', addMembers);
  $('leave-group').addEventListener('click', leaveGroup);
  for (const id of ['dlg-chat', 'dlg-group', 'dlg-members', 'dlg-report', 'dlg-admin']) wireDialog($(id));

  $('back').addEventListener('click', () => {
    const id = S.open;
    closeConversation();
    $('conv-list').querySelector(`.conv[data-id="${id}"]`)?.focus();
  });
  $('search-form').addEventListener('submit', submitSearch);
  $('search-input').addEventListener('input', onSearchInput);
  $('search-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') clearSearch();
  });
  $('search-list').addEventListener('click', onResultClick);
  $('search-more').addEventListener('click', moreResults);
  $('thread-close').addEventListener('click', closeThread);
  $('thread-list').addEventListener('click', onThreadAction);
  $('thread-composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitThread();
  });
  $('thread-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submitThread();
    } else if (ev.key === 'Escape') {
      ev.preventDefault();
      closeThread();
    }
  });
  $('jump').addEventListener('click', () => {
    scrollToBottom();
    checkRead();
  });

  const box = $('messages');
  box.addEventListener('scroll', () => {
    const c = S.convs.get(S.open);
    if (c && box.scrollTop < 150 && !c.complete && !c.loading && c.lowest != null) loadOlder(c).catch((e) => toast(e.message));
    checkRead();
  });
  box.addEventListener('click', onMessageAction);
  box.addEventListener('keydown', onMessagesKey);

  const input = $('composer-input');
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitComposer();
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submitComposer();
    } else if (ev.key === 'Escape' && S.mode) {
      ev.preventDefault();
      if (S.mode.kind === 'edit') input.value = '';
      setMode(null);
    }
  });
  input.addEventListener('input', () => {
    autosize();
    sendTyping(input.value.trim() !== '');
  });
  input.addEventListener('blur', () => sendTyping(false));
  // Attachments: the button opens the (hidden) file input; files can also be dropped on the conversation or pasted.
  const picker = $('attach-input');
  $('attach').addEventListener('click', () => picker.click());
  picker.addEventListener('change', () => {
    for (const file of picker.files) startUpload(file);
    picker.value = ''; // the same file can be picked again
  });
  $('composer-uploads').addEventListener('click', onUploadAction);
  input.addEventListener('paste', (ev) => {
    const files = [...(ev.clipboardData?.files ?? [])];
    if (!files.length) return;
    ev.preventDefault();
    files.forEach((f) => startUpload(f));
  });
  const pane = $('chat-pane');
  pane.addEventListener('dragover', (ev) => {
    if (ev.dataTransfer?.types.includes('Files') && !$('attach').disabled) ev.preventDefault();
  });
  pane.addEventListener('drop', (ev) => {
    if (!ev.dataTransfer?.files.length || $('attach').disabled) return;
    ev.preventDefault();
    for (const file of ev.dataTransfer.files) startUpload(file);
  });
  $('composer-cancel').addEventListener('click', () => {
    if (S.mode?.kind === 'edit') input.value = '';
    setMode(null);
  });

  // The browser knows about the network before the socket does.
  addEventListener('offline', () => client.interrupt('the browser went offline'));
  addEventListener('online', () => client.reconnectNow());
  document.addEventListener('visibilitychange', () => {
    if (!client.session) return;
    if (document.visibilityState === 'visible') {
      client.setPresence('online');
      client.reconnectNow();
      checkRead();
    } else {
      client.setPresence('away');
    }
  });

  if (client.session) showApp();
  else showAuth();
}

init();
