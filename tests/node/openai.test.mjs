// The official OpenAI Node SDK against the real gateway and the real agent.
//
// Run by tests/inference/test_node_sdk.py, which starts both, creates the domain and the token
// and passes them here: CUBE_BASE_URL, CUBE_TOKEN, CUBE_SPEECH_EN and CUBE_SPEECH_DE (WAV
// files made by espeak-ng). The SDK uploads files from `fs.createReadStream` with
// `Transfer-Encoding: chunked` and no Content-Length, which is what these tests exercise.
// CUBE_MAX_AUDIO_BYTES is the gateway's upload limit.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import OpenAI, { APIError, AuthenticationError, BadRequestError, NotFoundError } from "openai";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this suite through tests/inference/test_node_sdk.py`);
  }
  return value;
}

const baseURL = required("CUBE_BASE_URL");
const client = new OpenAI({ baseURL, apiKey: required("CUBE_TOKEN"), maxRetries: 0 });
const CHAT = "smollm2-135m-instruct";
const QUESTION = [{ role: "user", content: "What is the capital of France?" }];

function words(text) {
  return text.toLowerCase().match(/[a-z]+/g) ?? [];
}

test("models are listed and retrieved in OpenAI's shape", async () => {
  const page = await client.models.list();
  const ids = page.data.map((model) => model.id);
  for (const id of [CHAT, "all-minilm-l6-v2", "whisper-tiny.en", "whisper-base"]) {
    assert.ok(ids.includes(id), `${id} missing from ${ids}`);
  }
  assert.ok(page.data.every((model) => model.object === "model" && model.owned_by));
  const model = await client.models.retrieve("whisper-tiny.en");
  assert.equal(model.id, "whisper-tiny.en");
  assert.equal(model.object, "model");
});

test("a chat completion answers from the real model", async () => {
  const { data, response } = await client.chat.completions
    .create({ model: CHAT, messages: QUESTION, temperature: 0, max_tokens: 30 })
    .withResponse();
  assert.equal(data.object, "chat.completion");
  assert.equal(data.model, CHAT);
  assert.match(data.choices[0].message.content, /Paris/);
  assert.ok(data.usage.total_tokens > data.usage.prompt_tokens);
  assert.ok(response.headers.get("x-request-id"));
  assert.equal(response.headers.get("x-cube-confidential"), "false");
});

test("a streamed chat completion ends with the usage it was asked for", async () => {
  const stream = await client.chat.completions.create({
    model: CHAT,
    messages: QUESTION,
    temperature: 0,
    max_tokens: 30,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
  }
  const text = chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join("");
  assert.ok(chunks.length > 2, `only ${chunks.length} chunks`);
  assert.ok(chunks.every((chunk) => chunk.object === "chat.completion.chunk"));
  assert.match(text, /Paris/);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.completion_tokens > 0);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  assert.ok(chunks.slice(0, -1).every((chunk) => !chunk.usage));
});

test("a completion continues the prompt", async () => {
  const completion = await client.completions.create({
    model: CHAT,
    prompt: "The capital of France is",
    temperature: 0,
    max_tokens: 8,
  });
  assert.equal(completion.object, "text_completion");
  assert.ok(completion.choices[0].text.trim().length > 0);
  assert.ok(completion.usage.completion_tokens > 0);
});

test("embeddings come back as vectors, decoded from the SDK's default base64", async () => {
  const result = await client.embeddings.create({
    model: "all-minilm-l6-v2",
    input: ["The cat sits on the mat.", "A feline rests on a rug.", "Stock prices fell."],
  });
  assert.equal(result.object, "list");
  assert.equal(result.data.length, 3);
  const [cat, feline, stocks] = result.data.map((item) => item.embedding);
  assert.equal(cat.length, 384);
  assert.ok(cat.every(Number.isFinite));
  const dot = (a, b) => a.reduce((sum, value, i) => sum + value * b[i], 0);
  const cosine = (a, b) => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
  assert.ok(cosine(cat, feline) > cosine(cat, stocks), "similar sentences are closer");
});

test("a transcription uploaded from fs.createReadStream is transcribed", async () => {
  const transcription = await client.audio.transcriptions.create({
    model: "whisper-tiny.en",
    file: fs.createReadStream(required("CUBE_SPEECH_EN")),
  });
  const heard = new Set(words(transcription.text));
  const said = words("the quick brown fox jumps over the lazy dog");
  const found = said.filter((word) => heard.has(word));
  // Whisper tiny.en on synthetic speech varies a word or two between runs.
  assert.ok(found.length >= 6, `heard "${transcription.text}"`);
});

test("a translation uploaded from fs.createReadStream is relayed", async () => {
  const translation = await client.audio.translations.create({
    model: "whisper-base",
    file: fs.createReadStream(required("CUBE_SPEECH_DE")),
    response_format: "verbose_json",
  });
  // The relay is what is tested; translation quality is the agent's tests' concern.
  assert.equal(translation.task, "translate");
  assert.equal(typeof translation.text, "string");
  assert.ok(Array.isArray(translation.segments));
});

test("a bad token is an AuthenticationError", async () => {
  const outsider = new OpenAI({
    baseURL,
    apiKey: "cube_pat_notarealkey_notarealsecretnotarealsecret0000",
    maxRetries: 0,
  });
  await assert.rejects(outsider.models.list(), (error) => {
    assert.ok(error instanceof AuthenticationError);
    assert.equal(error.status, 401);
    assert.equal(error.code, "invalid_api_key");
    return true;
  });
});

test("an unknown model is a NotFoundError", async () => {
  await assert.rejects(client.models.retrieve("no-such-model"), (error) => {
    assert.ok(error instanceof NotFoundError);
    assert.equal(error.code, "model_not_found");
    return true;
  });
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: QUESTION }),
    (error) => error instanceof NotFoundError && error.param === "model",
  );
});

test("unsupported parameters and bad uploads are BadRequestErrors", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: CHAT, messages: QUESTION, n: 2 }),
    (error) => {
      assert.ok(error instanceof BadRequestError);
      assert.equal(error.param, "n");
      assert.equal(error.type, "invalid_request_error");
      return true;
    },
  );
  await assert.rejects(
    client.audio.transcriptions.create({
      model: "whisper-tiny.en",
      file: fs.createReadStream(required("CUBE_SPEECH_EN")),
      response_format: "mp3",
    }),
    (error) => error instanceof BadRequestError && error.param === "response_format",
  );
});

test("an upload streamed past the size limit is a 413 in OpenAI's envelope", async () => {
  const limit = Number(required("CUBE_MAX_AUDIO_BYTES"));
  const big = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cube-")), "big.wav");
  fs.writeFileSync(big, Buffer.alloc(2 * limit));
  const started = Date.now();
  await assert.rejects(
    client.audio.transcriptions.create({ model: "whisper-tiny.en", file: fs.createReadStream(big) }),
    (error) => {
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 413);
      assert.equal(error.code, "request_too_large");
      assert.equal(error.type, "invalid_request_error");
      return true;
    },
  );
  assert.ok(Date.now() - started < 10_000);
  fs.rmSync(path.dirname(big), { recursive: true });
});
