// The members dialog: a conversation's members with their presence and role; adding and removing members of a
// group, and leaving it.
import { $, el } from './dom.js';
import { ROLE_RANK, S, client, me } from './state.js';
import { convTitle, name } from './labels.js';
import { presenceOf, refreshPresence } from './presence.js';
import { rerenderMessages } from './message-list.js';
import { refreshDetails } from './conversations.js';
import { renderList } from './conversation-list.js';
import { renderHeader } from './conversation-view.js';
import { openDialog, resolveUsernames } from './dialogs.js';

/** The header's Members button: the dialog at once, then again with fresh details and presence. */
export function openMembers() {
  const c = S.convs.get(S.open);
  openDialog('dlg-members');
  renderMembers();
  if (c) refreshDetails(c).then(() => refreshMemberPresence(c)).then(renderMembers);
}

export function renderMembers() {
  const c = S.convs.get(S.open);
  if (!c) return;
  const ul = $('member-list');
  const myRank = ROLE_RANK[c.role] ?? 0;
  ul.replaceChildren(
    ...(c.members ?? []).map((m) =>
      el(
        'li',
        {},
        memberDot(m.user_id),
        el('span', { class: 'member-name', text: m.user_id === me() ? `${client.user.username} (you)` : name(m.user_id) }),
        el('span', { class: 'role', text: m.role }),
        c.kind === 'group' && m.user_id !== me() && myRank > ROLE_RANK[m.role]
          ? el('button', {
              type: 'button',
              class: 'small danger',
              'aria-label': `Remove ${name(m.user_id)}`,
              text: 'Remove',
              onclick: () => memberChange(() => client.removeMember(c.id, m.user_id)),
            })
          : null,
      ),
    ),
  );
  $('form-add-member').hidden = c.kind !== 'group' || myRank < 1 || c.left;
  $('leave-group').hidden = c.kind !== 'group' || c.left;
}

/** A member's presence dot: live for contacts (direct peers, groups up to 100), else as last asked for. */
function memberDot(userId) {
  const status = userId === me() ? 'online' : presenceOf(userId);
  return el('span', { class: `dot ${status}`, role: 'img', 'aria-label': status, title: status });
}

/**
 * Members of a group bigger than the server's presence fan-out are not told of each other's changes (see the
 * protocol's presence rules): the dialog asks for the presence of the members it shows, at most the first 500.
 */
function refreshMemberPresence(c) {
  const shown = (c.members ?? []).map((m) => m.user_id).filter((u) => u !== me()).slice(0, 500);
  return refreshPresence(shown);
}

async function memberChange(fn) {
  const c = S.convs.get(S.open);
  const err = $('dlg-members').querySelector('.error');
  err.textContent = '';
  try {
    await fn();
    await refreshDetails(c);
    renderMembers();
  } catch (e) {
    err.textContent = e.message;
  }
}

export async function addMembers(ev) {
  ev.preventDefault();
  const c = S.convs.get(S.open);
  await memberChange(async () => {
    const users = await resolveUsernames($('add-member-name').value);
    for (const u of users) await client.addMember(c.id, u.id);
    $('add-member-name').value = '';
  });
}

export async function leaveGroup() {
  const c = S.convs.get(S.open);
  if (!c || !confirm(`Leave “${convTitle(c)}”?`)) return;
  try {
    await client.removeMember(c.id, me());
    c.left = true;
    $('dlg-members').close();
    renderHeader(c);
    rerenderMessages(c);
    renderList();
  } catch (e) {
    $('dlg-members').querySelector('.error').textContent = e.message;
  }
}
