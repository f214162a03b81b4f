// Loaded before the contract's JavaScript example (node --import), which
// runs unchanged. It supplies what the example leaves to its page:
// `appendToOutput`, and an end — the example never closes its WebSocket, so
// the process exits once the task it posted to /tasks has completed.
const posted = new Set();
let output = "";

globalThis.appendToOutput = (text) => {
  output += text;
};

const nativeFetch = globalThis.fetch;
globalThis.fetch = async (url, options = {}) => {
  const response = await nativeFetch(url, options);
  if (String(url).endsWith("/tasks") && options.body) {
    posted.add(JSON.parse(options.body).task);
  }
  return response;
};

const NativeWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.type === "task_completed" && posted.has(data.task)) {
        console.log(`OUTPUT: ${output}`);
        process.exit(0);
      }
    });
  }
};
