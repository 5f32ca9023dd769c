"""zipage: Python client of a running `zipage serve`, over ctypes on libzipage.so (no build step).

    from zipage import Client
    with Client("zipage") as c:
        r = c.generate("Hello", max_tokens=32)          # {'text', 'ids', 'finish_reason', ...}
        for ev in c.stream("Hello", max_tokens=32):     # token events, then the final one
            print(ev.get("text", ""), end="")
        c.generate(messages=[{"role": "user", "content": "Hi"}])   # chat template in the engine

The library is found through $ZIPAGE_LIB, then build/libzipage.so of this checkout, then the
system's library path. The structures below mirror ipc/zipage.h field for field; keep them in
step with it. A Client is used from one thread at a time (like zipage_client).
"""
import ctypes
import ctypes.util
import codecs
import json
import os

_MAX_STOP = 16
EV_TOKEN, EV_FINAL = 1, 2
EVF_CONT = 1
PROMPT_TEXT, PROMPT_IDS, PROMPT_CHAT = 0, 1, 2
E_TIMEOUT = -13


class _Params(ctypes.Structure):
    _fields_ = [("temperature", ctypes.c_float), ("top_k", ctypes.c_int32),
                ("top_p", ctypes.c_float), ("min_p", ctypes.c_float),
                ("repetition_penalty", ctypes.c_float), ("presence_penalty", ctypes.c_float),
                ("frequency_penalty", ctypes.c_float), ("seed", ctypes.c_uint64),
                ("max_tokens", ctypes.c_int32), ("ignore_eos", ctypes.c_bool),
                ("logprobs", ctypes.c_bool), ("n_stop", ctypes.c_int32),
                ("stop_ids", ctypes.c_int32 * _MAX_STOP), ("compress", ctypes.c_int8),
                ("kv_budget_blocks", ctypes.c_int32), ("protect_prompt", ctypes.c_int32)]


class _Request(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("text", ctypes.c_char_p), ("text_len", ctypes.c_size_t),
                ("ids", ctypes.POINTER(ctypes.c_int32)), ("n_ids", ctypes.c_size_t),
                ("enable_thinking", ctypes.c_bool), ("params", _Params),
                ("stream", ctypes.c_bool), ("out_ids", ctypes.POINTER(ctypes.c_int32)),
                ("out_ids_cap", ctypes.c_size_t), ("out_text", ctypes.c_char_p),
                ("out_text_cap", ctypes.c_size_t), ("user_tag", ctypes.c_uint64)]


class _Event(ctypes.Structure):
    _fields_ = [("req_id", ctypes.c_uint64), ("user_tag", ctypes.c_uint64),
                ("type", ctypes.c_int), ("flags", ctypes.c_int), ("token", ctypes.c_int32),
                ("logprob", ctypes.c_float), ("text", ctypes.c_void_p),
                ("text_len", ctypes.c_size_t), ("finish", ctypes.c_int), ("error", ctypes.c_int),
                ("prompt_tokens", ctypes.c_int32), ("completion_tokens", ctypes.c_int32),
                ("kv_blocks_peak", ctypes.c_int32), ("compressions", ctypes.c_int32),
                ("cached_prompt_tokens", ctypes.c_int32), ("evicted_tokens", ctypes.c_int64),
                ("n_ids", ctypes.c_size_t)]


class _Options(ctypes.Structure):
    _fields_ = [("spin_us", ctypes.c_int32), ("hang_timeout_ms", ctypes.c_int32),
                ("engine_uid_set", ctypes.c_int32), ("engine_uid", ctypes.c_uint32)]


class _Stats(ctypes.Structure):
    _fields_ = ([(k, ctypes.c_int32) for k in ("running", "waiting", "max_concurrency",
                                                "blocks_total", "blocks_used", "blocks_free")] +
                [(k, ctypes.c_int64) for k in ("steps", "prompt_tokens", "completion_tokens",
                                                "preemptions", "prefix_hit_tokens",
                                                "prefix_query_tokens", "compressions",
                                                "evicted_tokens")] +
                [("busy_seconds", ctypes.c_double), ("tokens_per_s", ctypes.c_double)] +
                [(k, ctypes.c_int32) for k in ("clients", "inflight", "max_clients",
                                                "max_inflight_per_client")] +
                [(k, ctypes.c_int64) for k in ("submitted", "completed", "rejected",
                                                "client_deaths", "protocol_errors")] +
                [("engine_pid", ctypes.c_int32), ("state", ctypes.c_int32),
                 ("model", ctypes.c_char * 32), ("backend", ctypes.c_char * 8)])


def _load(path=None):
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (path, os.environ.get("ZIPAGE_LIB"),
                 os.path.join(here, "..", "..", "build", "libzipage.so"),
                 ctypes.util.find_library("zipage")):
        if cand and (os.path.exists(cand) or not os.path.dirname(cand)):
            lib = ctypes.CDLL(cand)
            break
    else:
        raise OSError("libzipage.so not found: set ZIPAGE_LIB or run `make` in the checkout")
    P = ctypes.POINTER
    sig = {
        "zipage_connect": (ctypes.c_int, [P(ctypes.c_void_p), ctypes.c_char_p, P(_Options)]),
        "zipage_disconnect": (None, [ctypes.c_void_p]),
        "zipage_params_default": (None, [P(_Params)]),
        "zipage_request_default": (None, [P(_Request)]),
        "zipage_submit": (ctypes.c_int, [ctypes.c_void_p, P(_Request), P(ctypes.c_uint64)]),
        "zipage_cancel": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint64]),
        "zipage_wait": (ctypes.c_int, [ctypes.c_void_p, P(_Event), ctypes.c_int, ctypes.c_int]),
        "zipage_get_stats": (ctypes.c_int, [ctypes.c_void_p, P(_Stats)]),
        "zipage_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "zipage_finish_name": (ctypes.c_char_p, [ctypes.c_int]),
        "zipage_last_error": (ctypes.c_char_p, []),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


class ZipageError(Exception):
    """A failed call or a request that ended with an error; .code is the ZIPAGE_E_* value."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Client:
    def __init__(self, name="zipage", lib=None, spin_us=0, engine_uid=None):
        """Attaches to the engine serving NAME. spin_us: busy-wait before sleeping
        (0 = the engine's default, -1 = busy-poll forever, -2 = sleep at once).
        engine_uid: also trust an engine run by this uid (another user's service); by
        default only an object owned by our own uid is used (ZipageError otherwise)."""
        self._lib = _load(lib)
        self._c = ctypes.c_void_p()
        opts = _Options(spin_us, 0, engine_uid is not None,
                        0 if engine_uid is None else engine_uid)
        rc = self._lib.zipage_connect(ctypes.byref(self._c), name.encode(), ctypes.byref(opts))
        self._check(rc)
        self._evs = (_Event * 64)()

    def _check(self, rc):
        if rc < 0:
            raise ZipageError(rc, "%s: %s" % (self._lib.zipage_strerror(rc).decode(),
                                              self._lib.zipage_last_error().decode(errors="replace")))
        return rc

    def close(self):
        if self._c:
            self._lib.zipage_disconnect(self._c)
            self._c = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _submit(self, prompt, ids, messages, enable_thinking, logprobs, stop_ids, **params):
        if sum(x is not None for x in (prompt, ids, messages)) != 1:
            raise ValueError("give exactly one of prompt, ids, messages")
        r = _Request()
        self._lib.zipage_request_default(ctypes.byref(r))
        keep = []
        if ids is not None:
            arr = (ctypes.c_int32 * len(ids))(*ids)
            keep.append(arr)
            r.kind, r.ids, r.n_ids = PROMPT_IDS, arr, len(ids)
        else:
            text = prompt if messages is None else json.dumps(messages)
            data = text.encode() if isinstance(text, str) else bytes(text)
            keep.append(data)
            r.kind = PROMPT_TEXT if messages is None else PROMPT_CHAT
            r.text, r.text_len = data, len(data)
        r.enable_thinking = enable_thinking
        r.stream = True
        r.params.logprobs = logprobs
        for k, v in params.items():
            if not hasattr(r.params, k):
                raise TypeError("unknown sampling parameter %r" % k)
            setattr(r.params, k, v)
        stop_ids = list(stop_ids)
        if len(stop_ids) > _MAX_STOP:
            raise ValueError("at most %d stop ids" % _MAX_STOP)
        r.params.n_stop = len(stop_ids)
        for i, s in enumerate(stop_ids):
            r.params.stop_ids[i] = s
        rid = ctypes.c_uint64()
        self._check(self._lib.zipage_submit(self._c, ctypes.byref(r), ctypes.byref(rid)))
        return rid.value

    def stream(self, prompt=None, ids=None, messages=None, enable_thinking=False,
               logprobs=False, stop_ids=(), timeout_ms=-1, **params):
        """Yields {'token', 'text', 'logprob'} per token, then one final dict with
        'finish_reason' and usage. Sampling parameters as in zipage_params
        (max_tokens, temperature, top_k, top_p, min_p, seed, ignore_eos, ...). Closing the
        iterator early cancels the request; its remaining events are skipped later."""
        rid = self._submit(prompt, ids, messages, enable_thinking, logprobs, stop_ids, **params)
        try:
            yield from self._events(rid, logprobs, timeout_ms)
        except GeneratorExit:  # the caller stopped early: the engine need not go on
            self._lib.zipage_cancel(self._c, rid)
            raise

    def _events(self, rid, logprobs, timeout_ms):
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            n = self._check(self._lib.zipage_wait(self._c, self._evs, 64, timeout_ms))
            for ev in self._evs[:n]:
                if ev.req_id != rid:
                    continue
                raw = ctypes.string_at(ev.text, ev.text_len) if ev.text_len else b""
                if ev.type == EV_TOKEN:
                    out = {"text": dec.decode(raw), "bytes": raw}
                    if not ev.flags & EVF_CONT:
                        out["token"] = ev.token
                        if logprobs:
                            out["logprob"] = ev.logprob
                    yield out
                    continue
                final = {"finish_reason": self._lib.zipage_finish_name(ev.finish).decode(),
                         "prompt_tokens": ev.prompt_tokens,
                         "completion_tokens": ev.completion_tokens,
                         "kv_blocks_peak": ev.kv_blocks_peak, "compressions": ev.compressions,
                         "text": dec.decode(b"", final=True)}
                if ev.error:
                    final["error"] = ev.error
                    final["message"] = raw.decode(errors="replace")
                yield final
                return

    def generate(self, prompt=None, ids=None, messages=None, **kw):
        """Runs one request to its end: {'text', 'ids', 'finish_reason', usage...}.
        Raises ZipageError when the request ends with an error."""
        pieces, toks, final = [], [], None
        for ev in self.stream(prompt, ids, messages, **kw):
            if "finish_reason" in ev:
                final = ev
            else:
                pieces.append(ev["bytes"])
                if "token" in ev:
                    toks.append(ev["token"])
        if final.get("error"):
            raise ZipageError(final["error"], final["message"])
        final["text"] = b"".join(pieces).decode(errors="replace")
        final["ids"] = toks
        return final

    def stats(self):
        s = _Stats()
        self._check(self._lib.zipage_get_stats(self._c, ctypes.byref(s)))
        out = {k: getattr(s, k) for k, _ in _Stats._fields_}
        out["model"], out["backend"] = s.model.decode(), s.backend.decode()
        return out
