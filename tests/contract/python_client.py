import asyncio
import aiohttp
import websockets
import json

async def create_session_and_run_task():
    async with aiohttp.ClientSession() as session:
        # Create a new session
        task_data = {"task": "Create a simple Flask app"}
        async with session.post("http://localhost:8000/api/sessions", json=task_data) as response:
            session_info = await response.json()
            session_id = session_info["session_id"]
            print(f"Created session: {session_id}")

        # Connect to WebSocket for real-time updates
        uri = f"ws://localhost:8000/ws/{session_id}"
        async with websockets.connect(uri) as websocket:
            # Execute a task
            task_data = {"task": "Add a simple route to the Flask app"}
            async with session.post(f"http://localhost:8000/api/sessions/{session_id}/tasks", json=task_data) as response:
                print("Task started")

            # Listen for updates
            async for message in websocket:
                data = json.loads(message)
                print(f"Event: {data['type']}")
                if data["type"] == "task_completed":
                    break

asyncio.run(create_session_and_run_task())
