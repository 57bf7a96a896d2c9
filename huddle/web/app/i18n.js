// The app's strings in English and Chinese. The language follows the browser
// (navigator.language) until the user picks one, which is kept in localStorage.

export const STRINGS = {
  en: {
    appName: "Huddle",
    signInTitle: "Sign in",
    nameLabel: "Your name",
    signIn: "Sign in",
    devHint: "Development sign-in: any name works.",
    tokenLabel: "Or paste an access token",
    useToken: "Use token",
    signingIn: "Signing in…",
    signInFailed: "Could not sign in: {error}",
    signedInAs: "Signed in as {name}",
    signOut: "Sign out",
    status: "Status",
    language: "Language",
    calls: "Calls",
    conversations: "Conversations",
    newGroup: "New group",
    groupName: "Group name",
    members: "Members (identities, separated by commas)",
    create: "Create",
    newChat: "New chat",
    chatWith: "Chat with (identity)",
    notAnIdentity: "“{text}” cannot be an identity: use letters, digits and . _ @ : + -",
    chatWithYourself: "That is you: start a chat with someone else.",
    start: "Start",
    cancel: "Cancel",
    back: "Back",
    message: "Message",
    messages: "Messages",
    send: "Send",
    // A message's length as the node counts it (textbox.js): near the limit, and over it.
    textLeft: "{n} characters left",
    textLeftOne: "1 character left",
    textOver: "Too long: {n} characters over the limit of {max}. Shorten it to send.",
    textOverOne: "Too long: 1 character over the limit of {max}. Shorten it to send.",
    loadOlder: "Load older messages",
    noConversation: "Pick a conversation, or start one.",
    noConversations: "No conversations yet.",
    noMessages: "No messages yet.",
    sending: "Sending…",
    notSent: "Not sent: {error}",
    failed_retry: "Retry",
    failed_edit: "Edit",
    failed_delete: "Delete",
    // Why the node refused a message (docs/protocol.md, chat.send); other codes show as they are.
    sendError_bad_message_content: "the server refused it as malformed (a direct message to yourself, or no text).",
    sendError_invalid_field: "the server refused it: the recipient or a field is not valid.",
    sendError_not_member: "you are not a member of this conversation.",
    sendError_forbidden: "you may not post in this conversation.",
    sendError_blocked: "this user does not accept your messages.",
    sendError_silenced: "an admin has silenced you here for now.",
    sendError_message_too_large: "the message is too long.",
    sendError_content_filtered: "it contains words this server does not allow.",
    sendError_unknown_media: "its file is no longer available.",
    sendError_unknown_message: "the message it replies to no longer exists.",
    sendError_recalled: "the message it replies to was recalled.",
    sendError_internal: "the server failed; it may have been sent. Retry to make sure.",
    read: "Read",
    readBy: "Read by {n}",
    typingOne: "{user} is typing…",
    typingMany: "{users} are typing…",
    reconnecting: "Connection lost. Reconnecting…",
    offline: "You are offline. Messages will be sent when you are back.",
    replaced: "This device signed in again in another tab or window.",
    useHere: "Use here",
    muted: "muted",
    closed: "Disconnected: {reason}",
    online: "online",
    away: "away",
    offlineStatus: "offline",
    lastSeen: "last seen {time}",
    unread: "{n} unread",
    you: "You",
    created: "{by} created “{name}”",
    renamed: "{by} renamed the conversation to “{name}”",
    joined: "{by} added {users}",
    removed: "{by} removed {users}",
    left: "{by} left",
    leftOwner: "{by} left; {users} is now the owner",
    madeAdmin: "{by} made {users} an admin",
    madeMember: "{by} made {users} a member",
    systemOther: "{by}: {event}",
    recalled: "Message recalled",
    attachment: "[{kind}]",
    attach: "Attach a file",
    uploads: "Uploads",
    uploading: "Uploading {name}",
    uploadFailed: "Upload failed: {error}",
    dismiss: "Dismiss",
    download: "Download",
    openImage: "Open {name}",
    photo: "[Photo]",
    fileNamed: "[File] {name}",
  },
  zh: {
    appName: "Huddle",
    signInTitle: "登录",
    nameLabel: "你的名字",
    signIn: "登录",
    devHint: "开发模式登录：任意名字均可。",
    tokenLabel: "或粘贴访问令牌",
    useToken: "使用令牌",
    signingIn: "正在登录…",
    signInFailed: "无法登录：{error}",
    signedInAs: "当前用户：{name}",
    signOut: "退出登录",
    status: "状态",
    language: "语言",
    calls: "通话",
    conversations: "会话",
    newGroup: "新建群组",
    groupName: "群组名称",
    members: "成员（身份标识，用逗号分隔）",
    create: "创建",
    newChat: "发起聊天",
    chatWith: "聊天对象（身份标识）",
    notAnIdentity: "“{text}”不能作为身份标识：只能使用字母、数字和 . _ @ : + -",
    chatWithYourself: "这是你自己，请和其他人聊天。",
    start: "开始",
    cancel: "取消",
    back: "返回",
    message: "消息",
    messages: "消息列表",
    send: "发送",
    textLeft: "还可输入 {n} 个字符",
    textLeftOne: "还可输入 1 个字符",
    textOver: "太长了：超出上限 {max} 个字符 {n} 个。删减后才能发送。",
    textOverOne: "太长了：超出上限 {max} 个字符 1 个。删减后才能发送。",
    loadOlder: "加载更早的消息",
    noConversation: "选择一个会话，或新建一个。",
    noConversations: "还没有会话。",
    noMessages: "还没有消息。",
    sending: "发送中…",
    notSent: "未发送：{error}",
    failed_retry: "重试",
    failed_edit: "编辑",
    failed_delete: "删除",
    sendError_bad_message_content: "服务器认为消息格式不对（发给了自己，或没有文字）。",
    sendError_invalid_field: "服务器拒绝了：接收人或某个字段无效。",
    sendError_not_member: "你不是此会话的成员。",
    sendError_forbidden: "你不能在此会话中发言。",
    sendError_blocked: "对方不接收你的消息。",
    sendError_silenced: "管理员暂时禁止你在此发言。",
    sendError_message_too_large: "消息太长。",
    sendError_content_filtered: "消息包含此服务器不允许的词语。",
    sendError_unknown_media: "它的文件已不存在。",
    sendError_unknown_message: "它回复的消息已不存在。",
    sendError_recalled: "它回复的消息已被撤回。",
    sendError_internal: "服务器出错，消息可能已发出。请重试以确认。",
    read: "已读",
    readBy: "{n} 人已读",
    typingOne: "{user} 正在输入…",
    typingMany: "{users} 正在输入…",
    reconnecting: "连接已断开，正在重新连接…",
    offline: "你已离线，消息将在恢复连接后发送。",
    replaced: "此设备已在另一个标签页或窗口中重新登录。",
    useHere: "在此使用",
    muted: "已静音",
    closed: "已断开连接：{reason}",
    online: "在线",
    away: "离开",
    offlineStatus: "离线",
    lastSeen: "最后在线 {time}",
    unread: "{n} 条未读",
    you: "你",
    created: "{by} 创建了“{name}”",
    renamed: "{by} 将会话改名为“{name}”",
    joined: "{by} 添加了 {users}",
    removed: "{by} 移除了 {users}",
    left: "{by} 离开了",
    leftOwner: "{by} 离开了，{users} 成为所有者",
    madeAdmin: "{by} 将 {users} 设为管理员",
    madeMember: "{by} 将 {users} 设为普通成员",
    systemOther: "{by}：{event}",
    recalled: "消息已撤回",
    attachment: "[{kind}]",
    attach: "添加文件",
    uploads: "上传",
    uploading: "正在上传 {name}",
    uploadFailed: "上传失败：{error}",
    dismiss: "关闭",
    download: "下载",
    openImage: "打开 {name}",
    photo: "[图片]",
    fileNamed: "[文件] {name}",
  },
};

export const LANGUAGES = { en: "English", zh: "中文" };

/**
 * A feature module's own strings, merged into the tables (a key already there is kept, so that
 * two modules cannot silently change each other's words).
 * @param {Record<string, Record<string, string>>} tables
 */
export function addStrings(tables) {
  for (const [lang, table] of Object.entries(tables)) {
    const into = /** @type {Record<string, string>} */ (/** @type {any} */ (STRINGS)[lang]);
    if (!into) throw new Error(`no language ${lang}`);
    for (const [key, text] of Object.entries(table)) {
      if (key in into && into[key] !== text) throw new Error(`string ${key} is defined twice`);
      into[key] = text;
    }
  }
}
const KEY = "huddle.lang";

/** The language to use: the user's pick, else the browser's. */
export function pickLanguage() {
  const kept = localStorage.getItem(KEY);
  if (kept && kept in STRINGS) return kept;
  const wanted = navigator.languages?.length ? navigator.languages : [navigator.language];
  for (const tag of wanted) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base in STRINGS) return base;
  }
  return "en";
}

/** @param {string} lang */
export function keepLanguage(lang) {
  localStorage.setItem(KEY, lang);
}

/**
 * @param {string} lang
 * @returns {(key: string, vars?: Record<string, any>) => string}
 */
export function translator(lang) {
  const table = STRINGS[lang] ?? STRINGS.en;
  return (key, vars = {}) =>
    (table[key] ?? STRINGS.en[key] ?? key).replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}
