"""Runs inside a sandbox (tests/security/test_control_channel.py): a request through the egress
proxy that names another command as its proxy user, to be attributed to that command.

usage: forged_proxy_user.py <victim command id> <proxy url>   (prints the proxy's status code)"""

import sys
import urllib.error
import urllib.parse
import urllib.request

victim, proxy_url = sys.argv[1:3]
proxy = urllib.parse.urlsplit(proxy_url)
forged = f"http://{victim}:x@{proxy.hostname}:{proxy.port}"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": forged}))
try:
    opener.open("http://denied.example/forged", timeout=10)
    print("200")
except urllib.error.HTTPError as e:
    print(e.code)
