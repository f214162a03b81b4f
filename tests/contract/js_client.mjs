// Create a new session
const response = await fetch("http://localhost:8000/api/sessions", {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ task: "Create a React component" }),
});
const session = await response.json();

// Connect to WebSocket
const ws = new WebSocket(`ws://localhost:8000/ws/${session.session_id}`);

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log("Event:", data.type, data);

  if (data.type === "text_delta") {
    // Stream agent output to UI
    appendToOutput(data.content);
  }
};

// Execute a task
await fetch(`http://localhost:8000/api/sessions/${session.session_id}/tasks`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ task: "Add props to the React component" }),
});
