"""A real deepagents agent, driven by the scripted model server (tests/modelserver.py), works in an
AstraForge sandbox through the toolkit: ``create_deep_agent(model, backend=SandboxBackend(...))``
writes a file and runs it, and both land in the sandbox and on its stream as records."""

from astraforge_toolkit import AstraForgeClient
from astraforge_toolkit.backend import SandboxBackend
from deepagents import create_deep_agent
from langchain_openai import ChatOpenAI

from astraforge.config import PROJECT_ROOT
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


def readme_quick_start() -> str:
    """The toolkit README's Python quick start, as written."""
    text = (PROJECT_ROOT / "toolkit" / "README.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_quick_start_runs_as_written(api_url, sandbox_processor, settings) -> None:
    """The README's lines, given only what its text says to bring (``api_key``, ``model``), make an
    agent whose file lands in a new sandbox."""
    code = readme_quick_start()
    assert "http://127.0.0.1:8000" in code
    turns = [
        Turn((tool_call("write_file", {"file_path": "/workspace/quick.txt", "content": "started\n"}),)),
        Turn((message("Wrote quick.txt."),)),
    ]
    with ModelServer(turns) as model_server:
        model = ChatOpenAI(model="scripted", base_url=f"http://127.0.0.1:{model_server.port}/v1", api_key="k")
        scope = {"api_key": new_tenant(settings)[1], "model": model}
        exec(compile(code.replace("http://127.0.0.1:8000", api_url), "README.md", "exec"), scope)
        with scope["client"] as client:  # closed whatever fails (an open socket fails a later test)
            (sandbox,) = client.list_sandboxes().items  # listed as soon as its create answered
            try:
                result = scope["agent"].invoke({"messages": [{"role": "user", "content": "Write quick.txt."}]})
                assert result["messages"][-1].content == "Wrote quick.txt."
                assert client.download(sandbox.id, "/workspace/quick.txt") == b"started\n"
            finally:
                client.delete_sandbox(sandbox.id)
