"""OTLP under SIGKILL: 8 clients export 50-record OTLP/protobuf requests to the
release binary while it is killed with SIGKILL every 3 s (6 times) and
restarted on the same queue; then the queue drains into the mock sink's
capture and every acknowledged record must be in it.

    cd "$(mktemp -d)" && cp /path/to/repo/tests/otlp/kill9_measure.py . &&
    ~/.cache/edge-ingester/otel-venv/bin/python kill9_measure.py target/release/edge-ingester

A measurement for README, not a cargo test (tests/crash.rs is the test).
"""
import subprocess, threading, time, json, re, urllib.request, os, signal, sys
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
EXE=os.path.abspath(sys.argv[1])
HERE=os.getcwd()
open("cfg.toml","w").write(f"""[server]
listen = "127.0.0.1:0"
[auth]
keys = ["k"]
[rate_limit]
requests_per_second = 1000000.0
burst = 1000000
[queue]
path = "{HERE}/queue"
[mock]
fail = "never"
capture_path = "{HERE}/capture.jsonl"
[forwarder]
initial_backoff_ms = 10
max_backoff_ms = 100
""")
state={"base":None}; lock=threading.Lock()
def start():
    p=subprocess.Popen([EXE,"serve","--config","cfg.toml"],stderr=subprocess.PIPE,stdout=subprocess.DEVNULL,text=True)
    for line in p.stderr:
        m=re.search(r"(127\.0\.0\.1:\d+)",line)
        if m and "listening" in line.lower():
            state["base"]="http://"+m.group(1); break
    threading.Thread(target=lambda: [None for _ in p.stderr],daemon=True).start()
    return p
acked=set(); sent=[0]; stop=False
def client(t):
    n=0
    while not stop:
        ids=[f"t{t}-r{n}-e{i}" for i in range(50)]
        req=ExportLogsServiceRequest(); sl=req.resource_logs.add().scope_logs.add()
        for x in ids:
            r=sl.log_records.add(); r.body.string_value=x; r.severity_number=9
        n+=1
        try:
            resp=urllib.request.urlopen(urllib.request.Request(state["base"]+"/v1/logs",data=req.SerializeToString(),headers={"content-type":"application/x-protobuf","x-api-key":"k"}),timeout=5)
            if resp.status==200:
                with lock: acked.update(ids)
        except Exception: time.sleep(0.02)
        sent[0]+=1
p=start()
ths=[threading.Thread(target=client,args=(t,)) for t in range(8)]
for th in ths: th.start()
kills=0
for _ in range(6):
    time.sleep(3); os.kill(p.pid,signal.SIGKILL); p.wait(); kills+=1; p=start()
time.sleep(2); stop=True
for th in ths: th.join()
# drain
def stats():
    return json.load(urllib.request.urlopen(urllib.request.Request(state["base"]+"/stats",headers={"x-api-key":"k"})))
for _ in range(600):
    s=stats()
    if s["queue"]["depth_batches"]==0: break
    time.sleep(0.1)
p.send_signal(signal.SIGTERM); p.wait()
got=set()
for line in open("capture.jsonl"):
    try: got.add(json.loads(line)["message"])
    except Exception: pass
lost=acked-got
print(f"kills {kills}, requests {sent[0]}, acknowledged entries {len(acked)}, delivered {len(got)}, acknowledged but lost {len(lost)}")
