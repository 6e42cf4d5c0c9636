"""kill -9 of the conversation processor mid-reply: the next one resumes the conversation from its
records. The killed one runs as a process; the next one in this process (this module has no other
conversation processor in the group)."""

import os
import signal
import subprocess
import threading

from astraforge.processors.conversations.processor import ConversationProcessor
from tests.conftest import gateway_listener
from tests.integration.test_conversations import create, ended, exec_in, post, records, turns
from tests.modelserver import ModelServer, message, tool_call
from tests.support import cli_env, wait_until


def conversation_processor(settings) -> subprocess.Popen:
    return subprocess.Popen(
        [".venv/bin/astraforge", "processors", "conversations"],
        env=cli_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_mid_tool_resumes_the_reply_without_running_the_tool_again(
    settings, sandbox_processor, api_url, tenant
) -> None:
    """Killed while the agent's command runs, the next processor closes the call as interrupted (never
    running it again) and the model carries on; the command ran once, the reply completed."""
    _, key = tenant
    script = [
        turns(tool_call("execute", {"command": "sleep 4; echo ran >> /workspace/effects.txt"})),
        turns(message("The command was interrupted; not running it twice.")),
    ]
    with ModelServer(script, listener=gateway_listener()) as model:
        first = conversation_processor(settings)
        second, thread = None, None
        try:
            conversation = create(api_url, key)
            cv, sandbox_id = conversation["id"], conversation["sandbox_id"]
            post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "run it once"})
            wait_until(
                lambda: any(e["type"] == "exec.started" for e in records(api_url, key, sandbox_id)),
                timeout=120,
                what="the agent's command started",
            )
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            # the next instance (in this process: it starts while the group waits out the dead one's session)
            second = ConversationProcessor(settings)
            thread = threading.Thread(target=second.run, daemon=True)
            thread.start()
            stream = ended(api_url, key, cv, timeout=180)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
            if second is not None:
                second.stop()
                thread.join(timeout=30)
        assert len(model.requests) == 2
    types = [e["type"] for e in stream]
    assert types.count("reply.started") == 1 and types[-1] == "reply.completed", types
    (result,) = [e["payload"] for e in stream if e["type"] == "tool.result"]
    assert result["is_error"] and result["output"].startswith("interrupted")
    wait_until(
        lambda: exec_in(api_url, key, sandbox_id, "cat /workspace/effects.txt")["stdout"] == "ran\n",
        timeout=30,
        what="the command's effect, once",
    )
    accepted = [e["payload"] for e in records(api_url, key, sandbox_id) if e["type"] == "exec.accepted"]
    assert [a["requested_by"] for a in accepted].count(f"conversation:{cv}") == 1  # the agent's one command
