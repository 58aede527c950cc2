"""The SAM stack deployed and run, without an AWS account: sam/template.yaml, the environment it
hands the functions and the binaries `sam build` makes, tested together as a user deploys them.

Run by scripts/test.sh (step "SAM stack on ministack") with the test venv's python:

    python sam/tests/deploy_on_ministack.py --cli target/debug/s3-compactor --build-dir DIR

1. starts its own ministack (CloudFormation with the SAM transform, Lambda running `bootstrap`
   binaries as host processes, SQS, EventBridge, S3 notifications to EventBridge, DynamoDB,
   CloudWatch Logs), with AWS_ENDPOINT_URL pointing at itself so the functions it runs call it;
2. `sam build` (cargo-lambda, x86_64: the arm64 Rust standard library cannot be installed on
   these machines) and `sam deploy`, both timed;
3. creates the source bucket with EventBridge notifications, puts a day of objects (keys with
   spaces, '+' and non-ASCII) and one under the destination prefix;
4. waits until ingest-fn (fed by the rule -> queue -> event source mapping) has recorded them;
5. invokes seal-fn as the schedule does and checks its answer and its metrics line;
6. verifies the outputs with the s3-compactor CLI (`verify --against-sources`), checks the
   sources were tagged and that the output's own event never became a message;
7. deletes the stack.

Prints what each step took. Exits non-zero with a message on the first failure.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config

STACK = "s3c-deploy-test"
BUCKET = "deploy-test-logs"
DAY = "app/2024/01/14/"
OBJECTS = 30

started = time.monotonic()


def say(message):
    print(f"[deploy test {time.monotonic() - started:6.1f}s] {message}", flush=True)


def fail(message):
    say(f"FAILED: {message}")
    sys.exit(1)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(what, seconds, check):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            fail(f"{what}: not within {seconds} s")
        time.sleep(1)


def run(command, env, what):
    say(f"$ {' '.join(command)}")
    began = time.monotonic()
    completed = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = time.monotonic() - began
    if completed.returncode != 0:
        print(completed.stdout[-6000:])
        fail(f"{what} exited {completed.returncode}")
    say(f"{what} took {took:.0f} s")
    return completed.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", required=True, help="the s3-compactor binary built with --features aws")
    parser.add_argument("--build-dir", required=True, help="where sam build puts its artifacts")
    parser.add_argument("--venv", default=os.path.dirname(os.path.dirname(sys.executable)))
    arguments = parser.parse_args()
    repository = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    venv_bin = os.path.join(arguments.venv, "bin")

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    work = tempfile.mkdtemp(prefix="s3c-deploy-")
    ministack_log = open(os.path.join(work, "ministack.log"), "w")
    # The functions run as ministack's child processes and inherit its environment: without
    # AWS_ENDPOINT_URL they would call real AWS.
    ministack_env = dict(os.environ, GATEWAY_PORT=str(port), BIND_HOST="127.0.0.1",
                         AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test",
                         AWS_SECRET_ACCESS_KEY="testtesttest", AWS_REGION="us-east-1",
                         AWS_DEFAULT_REGION="us-east-1")
    ministack = subprocess.Popen([os.path.join(venv_bin, "ministack")], env=ministack_env,
                                 stdout=ministack_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deploy_and_run(arguments, repository, venv_bin, endpoint, work)
    finally:
        os.killpg(ministack.pid, signal.SIGTERM)
        try:
            ministack.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(ministack.pid, signal.SIGKILL)
        if os.environ.get("KEEP_DEPLOY_TEST_LOGS"):
            say(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def deploy_and_run(arguments, repository, venv_bin, endpoint, work):
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="testtesttest",
                                    region_name="us-east-1")
    config = Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"})
    client = lambda name: session.client(name, endpoint_url=endpoint, config=config)  # noqa: E731
    s3, sqs, lambda_, logs, cloudformation = (client(name) for name in
                                              ("s3", "sqs", "lambda", "logs", "cloudformation"))
    wait_until("ministack answers", 60, lambda: _answers(s3))
    say(f"ministack at {endpoint}")

    # The bucket exists before the stack, as the template expects, with its events on.
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_notification_configuration(Bucket=BUCKET,
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})

    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ["PATH"], SAM_CLI_TELEMETRY="0",
               AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="testtesttest", AWS_REGION="us-east-1",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    env.pop("AWS_PROFILE", None)
    template = os.path.join(repository, "sam", "template.yaml")
    built = os.path.join(arguments.build_dir, "template.yaml")
    overrides = [f"SourceBucketName={BUCKET}", "Architecture=x86_64", "LogRetentionDays=1"]
    run([os.path.join(venv_bin, "sam"), "build", "--template-file", template, "--build-dir", arguments.build_dir,
         "--beta-features", "--parameter-overrides", *overrides], env, "sam build (cargo-lambda, both functions)")
    # Parameters are refused before anything is created. (The source template: packaging its
    # crate folders costs less than uploading the built binaries for a deploy that must fail.)
    for bad, expected in ((['DestinationPrefix=""'], "need a DestinationPrefix"),
                          (["DestinationPrefix=/compacted/"], "folders ending in '/'")):
        refused = subprocess.run([os.path.join(venv_bin, "sam"), "deploy", "--template-file", template, "--stack-name",
                                  STACK + "-refused", "--resolve-s3", "--capabilities", "CAPABILITY_IAM",
                                  "--region", "us-east-1", "--no-confirm-changeset", "--parameter-overrides",
                                  " ".join([f"SourceBucketName={BUCKET}", *bad])],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if refused.returncode == 0 or expected not in refused.stdout:
            fail(f"{bad} was not refused with {expected!r}: {refused.stdout[-1500:]}")
    say("bad parameters refused: an empty DestinationPrefix on the source bucket, a prefix starting with '/'")
    run([os.path.join(venv_bin, "sam"), "deploy", "--template-file", built, "--stack-name", STACK, "--resolve-s3",
         "--capabilities", "CAPABILITY_IAM", "--region", "us-east-1", "--no-confirm-changeset",
         "--no-fail-on-empty-changeset", "--parameter-overrides", *overrides], env, "sam deploy")
    stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        fail(f"stack is {stack['StackStatus']}")
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    for name in ("ManifestTableName", "IngestFunctionName", "SealFunctionName", "SealQueueUrl",
                 "IngestDeadLetterQueueUrl", "MetricsNamespace"):
        if not outputs.get(name):
            fail(f"output {name} missing: {outputs}")
    seal_configuration = lambda_.get_function_configuration(FunctionName=outputs["SealFunctionName"])
    environment = seal_configuration["Environment"]["Variables"]
    if environment.get("COMPACTOR_TABLE") != outputs["ManifestTableName"]:
        fail(f"seal-fn's COMPACTOR_TABLE is {environment.get('COMPACTOR_TABLE')}")
    say(f"stack {STACK} deployed: table {outputs['ManifestTableName']}")
    check_deployed_shape(outputs, lambda_, client("events"))

    # A day of objects, and one output-looking key the rule must keep out.
    originals = {}
    for index in range(OBJECTS):
        key = f"{DAY}part {index:03d}+x é.json"
        body = json.dumps({"index": index}).encode() + b"\n"
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        originals[key] = body
    s3.put_object(Bucket=BUCKET, Key="compacted/app/2024/01/14/elsewhere.json", Body=b"{}\n")
    say(f"put {OBJECTS} objects under {DAY}")

    cli = [arguments.cli, "--backend", "aws", "--table", outputs["ManifestTableName"], "--s3-endpoint", endpoint,
           "--dynamodb-endpoint", endpoint, "--path-style", "--source-bucket", BUCKET, "--json"]
    cli_env = dict(env, LOG_LEVEL="error")

    def pending():
        audit = subprocess.run(cli + ["audit"], env=cli_env, stdout=subprocess.PIPE, text=True)
        if audit.returncode != 0:
            return None
        return json.loads(audit.stdout)["summary"]["pending_objects"] == OBJECTS

    wait_until("ingest-fn records every object", 120, pending)
    say("ingest-fn recorded every object (EventBridge rule -> queue -> ingest-fn)")

    # The schedule's event, as EventBridge sends it.
    schedule = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
    answer = lambda_.invoke(FunctionName=outputs["SealFunctionName"], Payload=json.dumps(schedule).encode())
    payload = json.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError") or not isinstance(payload, dict) or payload.get("partitions_sealed") != 1:
        fail(f"seal-fn answered {answer.get('FunctionError')}: {payload}")
    say(f"seal-fn sealed the day: {payload['objects_compacted']} objects into {payload['outputs_committed']} output(s)")

    verify = subprocess.run(cli + ["verify", "--against-sources"], env=cli_env, stdout=subprocess.PIPE, text=True)
    if verify.returncode != 0:
        fail(f"verify exited {verify.returncode}: {verify.stdout[-2000:]}")
    report = json.loads(verify.stdout)
    if report.get("sources_checked") != OBJECTS or report.get("sources_ok") != OBJECTS:
        fail(f"verify: {report}")
    for key in originals:
        tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
        if {"Key": "compacted", "Value": "true"} not in tags:
            fail(f"{key} was not tagged: {tags}")
    say(f"the CLI verified {OBJECTS} sources against the outputs; every source is tagged")

    # seal-fn's metrics line, in the log group the template gave it.
    log_group = f"/s3-compactor/{STACK}/seal-fn"

    def metrics_line():
        try:
            events = logs.filter_log_events(logGroupName=log_group)["events"]
        except Exception:  # noqa: BLE001 (not there yet)
            return None
        messages = [event["message"] for event in events if '"_aws"' in event["message"]]
        lines = [json.loads(message[message.index("{"):]) for message in messages]
        return lines[-1] if lines else None

    line = wait_until(f"seal-fn's metrics line in {log_group}", 30, metrics_line)
    directive = line["_aws"]["CloudWatchMetrics"][0]
    if directive["Namespace"] != outputs["MetricsNamespace"] or line.get("ObjectsSealed") != OBJECTS:
        fail(f"seal-fn's metrics: {line}")
    say(f"seal-fn printed its metrics to {log_group} in {directive['Namespace']}")

    # The output's own event and the key under compacted/ never reached the queue: nothing was
    # recorded outside the day, nothing dead-lettered.
    dead = sqs.get_queue_attributes(QueueUrl=outputs["IngestDeadLetterQueueUrl"],
                                    AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    if dead["ApproximateNumberOfMessages"] != "0":
        fail(f"the ingest dead-letter queue holds {dead}")

    run([os.path.join(venv_bin, "sam"), "delete", "--stack-name", STACK, "--region", "us-east-1", "--no-prompts"],
        env, "sam delete")
    say("passed")


def check_deployed_shape(outputs, lambda_, events):
    """What the template asks of the deployed resources, where ministack reports it."""
    mappings = lambda_.list_event_source_mappings(FunctionName=outputs["SealFunctionName"])["EventSourceMappings"]
    if [mapping.get("ScalingConfig", {}).get("MaximumConcurrency") for mapping in mappings] != [10]:
        fail(f"the seal queue's event source is not bounded to 10 workers: {mappings}")
    rules = events.list_rules()["Rules"]
    objects_rule = next(rule for rule in rules if "ObjectEventsRule" in rule["Name"])
    pattern = json.loads(objects_rule["EventPattern"])
    if pattern["detail"]["object"]["key"] != [{"anything-but": {"prefix": "compacted/"}}]:
        fail(f"the rule does not keep the outputs out: {pattern}")
    if pattern["detail-type"] != ["Object Created"]:
        fail(f"the rule does not keep deletions (the compactor's own, nearly all) out of ingest: {pattern}")
    target = events.list_targets_by_rule(Rule=objects_rule["Name"])["Targets"][0]
    if "IngestDeadLetterQueue" not in target.get("DeadLetterConfig", {}).get("Arn", ""):
        fail(f"the rule's target has no dead-letter queue: {target}")
    # Gaps of ministack, said rather than tested: it accepts both, but reports neither.
    reserved = lambda_.get_function_concurrency(FunctionName=outputs["SealFunctionName"])
    if "ReservedConcurrentExecutions" not in reserved:
        say("ministack does not report seal-fn's reserved concurrency (not checked here)")
    try:
        lambda_.get_function_event_invoke_config(FunctionName=outputs["SealFunctionName"])
    except Exception:  # noqa: BLE001
        say("ministack does not report seal-fn's EventInvokeConfig (no retry of the schedule; not checked here)")
    say("deployed shape: 10 workers at most, the rule sends creations only, filters outputs and dead-letters"
        " what it cannot deliver")


def _answers(s3):
    try:
        s3.list_buckets()
        return True
    except Exception:  # noqa: BLE001 (still starting)
        return False


if __name__ == "__main__":
    main()
