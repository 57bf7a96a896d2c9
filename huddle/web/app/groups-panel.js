// The details panel of a group or channel, which groups.js loads the first time one is
// opened: the members with their roles, and what the user's role may do (rename, add, remove,
// change roles, leave or unfollow). Each request's refusal is shown in the panel, and the
// panel asks for the members again after every system message of the conversation.

import { allowed, mayChangeRole, mayRemove } from "/web/sdk/roles.js";
import { identities, leave, refusal } from "./groups.js";
import { stylesheet } from "./dom.js";

await stylesheet(new URL("./groups-panel.css", import.meta.url));

/** @type {any} what app.js gives feature modules */
let ui = null;
/**
 * The open panel.
 * @type {{conv: string, dialog: HTMLDialogElement, info: {conv: Record<string, any>, members: {user: string, role: string}[]} | null, error: string, busy: boolean} | null}
 */
let panel = null;

const t = (/** @type {string} */ key, /** @type {Record<string, any>} */ vars = {}) => ui.t(key, vars);

/** @param {any} from */
export function init(from) {
  ui = from;
  ui.addStrings(STRINGS);
}

/**
 * The list changed: a panel of a conversation the user is no longer in closes, another shows
 * the new name and role.
 * @param {Map<string, Record<string, any>>} now
 */
export function listChanged(now) {
  if (panel && !now.has(panel.conv)) panel.dialog.close();
  else if (panel) renderPanel();
}

/**
 * A message came: members and roles are chat.info's, asked again after a system message.
 * @param {string} conv
 * @param {Record<string, any>} message
 */
export function messageCame(conv, message) {
  if (panel?.conv === conv && message.kind === "system") loadInfo();
}

export function closePanel() {
  panel?.dialog.close();
}

/** @param {string} conv */
export function openPanel(conv) {
  panel?.dialog.close();
  const dialog = /** @type {HTMLDialogElement} */ (ui.h("dialog", { id: "details", class: "details", "aria-labelledby": "details-title" }));
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (panel?.dialog === dialog) panel = null;
    /** @type {HTMLElement | null} */ (document.getElementById("details-open"))?.focus();
  });
  document.body.append(dialog);
  panel = { conv, dialog, info: null, error: "", busy: false };
  renderPanel();
  dialog.showModal();
  loadInfo();
}

async function loadInfo() {
  const open = panel;
  if (!open) return;
  try {
    const info = await ui.app.chat.info(open.conv);
    if (panel !== open) return;
    open.info = info;
  } catch (e) {
    if (panel !== open) return;
    open.error = refusal(e, "info");
  }
  renderPanel();
}

/**
 * Run a management request from the panel; its refusal is shown there.
 * @param {string} action
 * @param {() => Promise<void>} request
 */
async function act(action, request) {
  const open = panel;
  if (!open || open.busy) return;
  const from = document.activeElement?.id;
  open.busy = true;
  open.error = "";
  renderPanel();
  try {
    await request();
  } catch (e) {
    open.error = refusal(e, action);
  } finally {
    open.busy = false;
  }
  if (panel !== open) return;
  renderPanel();
  // Also after a refusal: the role it was refused for may have changed unseen.
  await loadInfo();
  // The keyboard goes on where it was (the control may have been redrawn, or be gone).
  const back = (from && open.dialog.querySelector(`#${CSS.escape(from)}`)) || open.dialog.querySelector("#details-close");
  if (panel === open && !open.dialog.contains(document.activeElement)) /** @type {HTMLElement} */ (back)?.focus();
}

function renderPanel() {
  if (!panel) return;
  const { h, app } = ui;
  const { conv, dialog, info, error, busy } = panel;
  // chat.info's answer is the server's word on the user's role, newer than the list's after a
  // refusal; it is asked again whenever a system message comes.
  const summary = { ...(app.chat?.conversation(conv) ?? {}), ...(info?.conv ?? {}) };
  const kind = summary.kind ?? "group";
  const role = summary.role;
  const may = allowed(kind, role);
  const me = app.chat?.me;
  const members = [...(info?.members ?? [])].sort(
    (a, b) => RANK.indexOf(a.role) - RANK.indexOf(b.role) || a.user.localeCompare(b.user),
  );
  const focusedId = document.activeElement?.id;
  const rows = members.map((m) => {
    const self = m.user === me;
    const roleSelect = mayChangeRole(kind, role, m.role)
      ? h("select", {
          class: "role-select",
          id: `role-${m.user}`,
          "data-user": m.user,
          "aria-label": t("roleOf", { user: m.user }),
          disabled: busy,
          onchange: (/** @type {Event} */ e) => {
            const to = /** @type {HTMLSelectElement} */ (e.target).value;
            act("role", () => app.chat.setRole(conv, m.user, to));
          },
        }, [
          m.role === "follower" ? h("option", { value: "follower", selected: true, disabled: true, text: t("role_follower") }) : null,
          h("option", { value: "admin", selected: m.role === "admin", text: t("role_admin") }),
          h("option", { value: "member", selected: m.role === "member", text: t("role_member") }),
        ])
      : h("span", { class: "member-role", text: t(`role_${m.role}`) });
    return h("li", { class: "member", "data-user": m.user, "data-role": m.role }, [
      h("span", { class: "member-name", text: self ? t("meName", { user: m.user }) : m.user }),
      roleSelect,
      mayRemove(kind, role, m.role, self)
        ? h("button", {
            type: "button",
            class: "remove-member",
            id: `remove-${m.user}`,
            "data-user": m.user,
            "aria-label": t("removeUser", { user: m.user }),
            disabled: busy,
            onclick: () => act("remove", () => app.chat.remove(conv, [m.user])),
            text: t("remove"),
          })
        : null,
    ]);
  });
  const renameInput = /** @type {HTMLInputElement} */ (h("input", { id: "rename-input", required: true, maxlength: 128, value: summary.name ?? "" }));
  const addInput = /** @type {HTMLInputElement} */ (h("input", { id: "add-members", autocomplete: "off", placeholder: "dave, erin" }));
  // A redraw keeps what is being typed in the forms.
  const typedName = /** @type {HTMLInputElement | null} */ (dialog.querySelector("#rename-input"));
  if (typedName && typedName.dataset.edited) {
    renameInput.value = typedName.value;
    renameInput.dataset.edited = "1";
  }
  renameInput.addEventListener("input", () => (renameInput.dataset.edited = "1"));
  addInput.value = /** @type {HTMLInputElement | null} */ (dialog.querySelector("#add-members"))?.value ?? "";
  const parts = [
    h("header", { class: "details-head" }, [
      h("h2", { id: "details-title", text: summary.name ?? conv }),
      h("button", { type: "button", id: "details-close", onclick: () => dialog.close(), text: t("close") }),
    ]),
    h("p", { class: "details-kind", text: t(kind === "channel" ? "aboutChannel" : "aboutGroup", { n: summary.members ?? members.length, role: t(`role_${role}`) }) }),
    kind === "channel"
      ? h("p", { class: "channel-id" }, [t("channelIdIs"), " ", h("code", { id: "channel-id", text: conv })])
      : null,
    h("p", { id: "details-error", class: "form-error", role: "alert", text: error }),
    may.rename
      ? h("form", {
          id: "rename-form",
          class: "details-row",
          onsubmit: (/** @type {Event} */ e) => {
            e.preventDefault();
            const name = renameInput.value.trim();
            if (name) act("rename", async () => {
              await app.chat.rename(conv, name);
              const input = /** @type {HTMLInputElement | null} */ (dialog.querySelector("#rename-input"));
              if (input) delete input.dataset.edited;
            });
          },
        }, [h("label", { for: "rename-input", text: t("rename") }), renameInput, h("button", { type: "submit", id: "rename-save", disabled: busy, text: t("save") })])
      : null,
    h("h3", { id: "members-title", text: info ? t(kind === "channel" ? "followersTitle" : "membersTitle", { n: members.length }) : t("loadingMembers") }),
    h("ul", { id: "details-members", class: "members", "aria-labelledby": "members-title", "aria-busy": busy || !info ? "true" : null }, rows),
    may.add
      ? h("form", {
          id: "add-form",
          class: "details-row",
          onsubmit: (/** @type {Event} */ e) => {
            e.preventDefault();
            const { users, bad } = identities(addInput.value);
            if (bad.length) {
              if (panel) panel.error = t("notAnIdentity", { text: bad[0] });
              renderPanel();
              return;
            }
            if (users.length) act("add", async () => {
              await app.chat.add(conv, users);
              const input = /** @type {HTMLInputElement | null} */ (dialog.querySelector("#add-members"));
              if (input) input.value = "";
            });
          },
        }, [h("label", { for: "add-members", text: t("addMembers") }), addInput, h("button", { type: "submit", id: "add-submit", disabled: busy, text: t("add") })])
      : null,
    h("footer", { class: "details-foot" }, [
      may.leave
        ? h("button", {
            type: "button",
            id: "leave-conv",
            class: "danger",
            disabled: busy,
            onclick: () => act("leave", () => leave(conv, "leave")),
            text: t(kind === "channel" ? "leaveChannel" : "leaveGroup"),
          })
        : null,
      may.unfollow
        ? h("button", { type: "button", id: "unfollow-conv", class: "danger", disabled: busy, onclick: () => act("leave", () => leave(conv, "unfollow")), text: t("unfollow") })
        : null,
    ]),
  ];
  dialog.replaceChildren(...parts.filter((el) => el !== null));
  if (focusedId) /** @type {HTMLElement | null} */ (dialog.querySelector(`#${CSS.escape(focusedId)}`))?.focus();
}

const RANK = ["owner", "admin", "member", "follower"];

const STRINGS = {
  en: {
    close: "Close",
    aboutGroup: "Group · {n} members · your role: {role}",
    aboutChannel: "Channel · {n} members and followers · your role: {role}",
    channelIdIs: "Others follow this channel with its id:",
    rename: "Name",
    save: "Save",
    membersTitle: "Members ({n})",
    followersTitle: "Members and followers ({n})",
    loadingMembers: "Members…",
    addMembers: "Add members (identities, separated by commas)",
    add: "Add",
    remove: "Remove",
    removeUser: "Remove {user}",
    roleOf: "Role of {user}",
    meName: "{user} (you)",
    role_owner: "owner",
    role_admin: "admin",
    role_member: "member",
    role_follower: "follower",
    role_undefined: "not a member",
    leaveGroup: "Leave group",
    leaveChannel: "Leave channel",
  },
  zh: {
    close: "关闭",
    aboutGroup: "群组 · {n} 名成员 · 你的角色：{role}",
    aboutChannel: "频道 · {n} 名成员和关注者 · 你的角色：{role}",
    channelIdIs: "其他人可以用此 ID 关注频道：",
    rename: "名称",
    save: "保存",
    membersTitle: "成员（{n}）",
    followersTitle: "成员和关注者（{n}）",
    loadingMembers: "成员…",
    addMembers: "添加成员（身份标识，用逗号分隔）",
    add: "添加",
    remove: "移除",
    removeUser: "移除 {user}",
    roleOf: "{user} 的角色",
    meName: "{user}（你）",
    role_owner: "所有者",
    role_admin: "管理员",
    role_member: "成员",
    role_follower: "关注者",
    role_undefined: "非成员",
    leaveGroup: "退出群组",
    leaveChannel: "退出频道",
  },
};
