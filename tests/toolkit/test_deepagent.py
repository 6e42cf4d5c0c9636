"""A real deepagents agent, driven by the scripted model server (tests/modelserver.py), works in an
AstraForge sandbox through the toolkit: ``create_deep_agent(model, backend=SandboxBackend(...))``
writes a file and runs it, and both land in the sandbox and on its stream as records."""

from astraforge_toolkit import AstraForgeClient
from astraforge_toolkit.backend import SandboxBackend
from deepagents import create_deep_agent
from langchain_openai import ChatOpenAI

from tests.conftest import new_tenant
from tests.modelserver import ModelServer, Turn, message, tool_call

SCRIPT = "print('hello from the agent', 6 * 7)\n"


def test_a_deep_agent_creates_a_file_and_runs_a_command(api_url, sandbox_processor, settings) -> None:
    turns = [
        Turn((tool_call("write_file", {"file_path": "/workspace/hello.py", "content": SCRIPT}),)),
        Turn((tool_call("execute", {"command": "cd /workspace && python hello.py"}),)),
        Turn((message("hello.py prints its greeting."),)),
    ]
    with AstraForgeClient(api_url, new_tenant(settings)[1]) as client, ModelServer(turns) as model_server:
        sandbox = client.create_sandbox()
        try:
            model = ChatOpenAI(model="scripted", base_url=f"http://127.0.0.1:{model_server.port}/v1", api_key="k")
            agent = create_deep_agent(model=model, backend=SandboxBackend(client, sandbox.id))
            result = agent.invoke({"messages": [{"role": "user", "content": "Write hello.py and run it."}]})

            assert result["messages"][-1].content == "hello.py prints its greeting."
            assert client.download(sandbox.id, "/workspace/hello.py").decode() == SCRIPT
            # the command's output went back to the model with the tool result
            assert len(model_server.requests) == 3
            tool_results = [m for m in model_server.requests[2].body["messages"] if m["role"] == "tool"]
            assert "hello from the agent 42" in str(tool_results[-1]["content"])
            # and both are records of the sandbox's stream
            seen = set()
            for event in client.stream(sandbox.id):
                if event.type == "file.written" and event.payload.get("path") == "/workspace/hello.py":
                    seen.add("write")
                if event.type == "exec.output" and "hello from the agent 42" in str(event.payload):
                    seen.add("run")
                if seen == {"write", "run"}:
                    break
        finally:
            client.delete_sandbox(sandbox.id)
