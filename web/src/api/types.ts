/** The API's shapes the UI reads (see the OpenAPI document at /openapi.json). */

export interface StreamEvent {
  offset: number;
  partition: number;
  event_id: string;
  type: string;
  stream_id: string;
  sandbox_id: string | null;
  occurred_at: string;
  actor: string;
  causation_id: string | null;
  correlation_id: string | null;
  payload: Record<string, any>;
}

/** A page of a stream's records (GET /v1/streams/{id}/events). */
export interface EventsPage {
  items: StreamEvent[];
  next_after: number | null;
}

export interface Run {
  id: string;
  state: string;
  attempt: number;
  title: string | null;
  agent: string | null;
  repository: string | null;
  sandbox_id: string | null;
  reason: string | null;
  created_at: string;
  updated_at: string;
}

export interface Page<T> {
  items: T[];
  next_after: string | null;
}

export interface Diff {
  diff_id: string;
  files: string[];
  patch: string | null;
  artifact: ArtifactRef | null;
  additions: number;
  deletions: number;
  attempt: number;
  step: number;
  binary_files: string[];
}

export interface TestResult {
  suite: string;
  command: string | null;
  passed: number;
  failed: number;
  skipped: number;
  errors: number;
  duration_ms: number;
  exit_code: number | null;
  source: string;
}

export interface MergeRequest {
  provider: string;
  url: string;
  number: number;
  branch: string;
  base: string;
  commit: string | null;
}

export interface Attempt {
  attempt: number;
  guidance: string | null;
  diffs: Diff[];
  test_results: TestResult[];
  patch: { patch: ArtifactRef | null; summary: string | null; files: string[]; additions: number; deletions: number } | null;
  violations: Record<string, any>[];
  review: { decision: string; reviewer: string; comment: string | null } | null;
  merge_request: MergeRequest | null;
}

export interface ArtifactRef {
  artifact_id: string;
  key: string;
  sha256: string;
  size: number;
  content_type: string | null;
  name: string | null;
}

export interface RunDetail extends Run {
  spec: string | null;
  attempts: Attempt[];
  artifacts: ArtifactRef[];
}

export interface Sandbox {
  id: string;
  state: string;
  image: string | null;
  provider: string | null;
  reason: string | null;
  created_at: string;
  updated_at: string;
}

export interface ExecResult {
  command_id: string;
  exit_code: number | null;
  stdout: string;
  stderr: string;
  output: string;
  duration_ms: number;
  timed_out: boolean;
  truncated: boolean;
  error: string | null;
}

export interface Verification {
  stream_id: string;
  checked: number;
  ok: boolean;
  differences: { offset: number; problem: string }[];
}

export const ENDED_RUN_STATES = ["merged", "rejected", "failed", "cancelled"];
export const RUN_STATES = [
  "requested", "provisioning", "preparing", "running", "verifying", "awaiting_review",
  "approved", "merged", "rejected", "failed", "cancelled",
];

export interface Conversation {
  id: string;
  sandbox_id: string;
  model: string;
  title: string | null;
  state: string;
  reply_id: string | null;
  last_reply: string | null;
  reason: string | null;
  created_at: string;
  updated_at: string;
}

/** An integration as the API shows it: its secrets never leave the server. */
export interface Integration {
  id: string;
  kind: "sentry" | "glitchtip";
  name: string;
  webhook_path: string | null;
  has_api_token: boolean;
  organization: string | null;
  projects: Record<string, { repository: string; base_branch: string }>;
  agent: string;
  created_at: string;
}
