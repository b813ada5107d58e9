/* hostward.agent.detectors._logscan: the login-log chunk parser's hot loop, in C.
 *
 * The pure-Python twin is LogParser._parse_chunk (logparse.py); this module gives the same rows, line
 * starts and counters for a chunk, only faster. The chunk regex comes rewritten by logscanner.scanner_regex
 * (PCRE2 syntax where it differs; few capture groups; a mark (*:N) after each of Python's named groups,
 * N its number, so the last mark passed is Python's lastindex) and is compiled with PCRE2 and its JIT.
 *
 * A scan has two passes. The first matches every line of the chunk (one anchored match per line start,
 * exactly the matches Python's finditer yields) and records what the row builder needs, without the GIL
 * and without touching a Python object. If any line cannot be matched the way Python would (a PCRE2
 * limit, no memory) the scan returns None before anything was appended or called, and the caller runs
 * the pure path over the chunk: nothing is lost or counted twice. The second pass builds the rows with
 * the parser's own caches and callbacks (addresses, timestamps, the reference path for "slow" lines).
 *
 * The scanner only takes ASCII chunks without the characters 0x1c-0x1f: on those PCRE2 without UTF/UCP
 * and Python's Unicode-aware \d \s \w classes agree (Python counts 0x1c-0x1f as whitespace, PCRE2 does
 * not). Anything else is declined (None) and goes the pure path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define NFIELDS 5 /* user, address, port, method, ts: logcompile.FAST_FIELDS */
#define F_USER 0
#define F_ADDR 1
#define F_PORT 2
#define F_METHOD 3
#define F_TS 4

enum { CODE_FAST = 0, CODE_SKIPPED = 1, CODE_UNMATCHED = 2, CODE_SLOW = 3 };

#define UNSET_OFF UINT32_MAX
#define JIT_STACK_START (64 * 1024)
#define JIT_STACK_MAX (16 * 1024 * 1024)

typedef struct {
    int code;
    uint32_t group[NFIELDS];
    PyObject *kind, *service, *pattern, *counting; /* borrowed: owned by Scanner.table */
} Entry;

/* one matched line: where it is, which table entry, and the spans of the entry's five groups */
typedef struct {
    uint32_t start, end, entry;
    uint32_t span[2 * NFIELDS];
} Rec;

#define STR_SLOTS 4096 /* a power of two */

/* What a scan needs besides the compiled regex; a scanner keeps one set for the next scan. `strings` holds
 * the str objects of recent field texts (users, methods, address and minute keys) by their bytes, so a
 * text seen again costs no allocation and keeps its cached hash: attackers repeat themselves. */
typedef struct {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *stack;
    Rec *recs;
    size_t cap;
    PyObject **strings; /* STR_SLOTS strong references (or NULL) */
} Resources;

typedef struct {
    PyObject_HEAD
    pcre2_code *code;
    int jit;
    uint32_t groups; /* capture groups of the PCRE2 regex */
    uint32_t size;   /* table entries: Python's groups + 1 */
    Entry *entries;  /* per Python group number: what a line means when that group closed last */
    PyObject *table;
    Resources cached; /* reused by one scan at a time (the GIL guards `busy`) */
    int busy;
    int ready;            /* __init__ completed */
    uint32_t match_limit; /* 0: PCRE2's default */
} Scanner;

/* with the GIL held (it drops the cached strings) */
static void resources_free(Resources *r) {
    if (r->md) pcre2_match_data_free(r->md);
    if (r->mctx) pcre2_match_context_free(r->mctx);
    if (r->stack) pcre2_jit_stack_free(r->stack);
    PyMem_RawFree(r->recs);
    if (r->strings) {
        for (size_t i = 0; i < STR_SLOTS; i++) Py_XDECREF(r->strings[i]);
        PyMem_Free(r->strings);
    }
    memset(r, 0, sizeof *r);
}

static int resources_make(Scanner *self, Resources *r) {
    memset(r, 0, sizeof *r);
    r->md = pcre2_match_data_create_from_pattern(self->code, NULL);
    r->mctx = pcre2_match_context_create(NULL);
    r->stack = self->jit ? pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL) : NULL;
    r->strings = PyMem_Calloc(STR_SLOTS, sizeof(PyObject *));
    if (!r->md || !r->mctx || (self->jit && !r->stack) || !r->strings) {
        resources_free(r);
        return -1;
    }
    if (r->stack) pcre2_jit_stack_assign(r->mctx, NULL, r->stack);
    if (self->match_limit) pcre2_set_match_limit(r->mctx, self->match_limit);
    return 0;
}

static void Scanner_dealloc(Scanner *self) {
    resources_free(&self->cached);
    if (self->code) pcre2_code_free(self->code);
    PyMem_Free(self->entries);
    Py_XDECREF(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int load_entry(Entry *e, PyObject *item, uint32_t groups) {
    if (PyLong_Check(item)) {
        long code = PyLong_AsLong(item);
        if (code == -1 && PyErr_Occurred()) return -1;
        if (code != CODE_SKIPPED && code != CODE_UNMATCHED && code != CODE_SLOW) {
            PyErr_Format(PyExc_ValueError, "bad table code %ld", code);
            return -1;
        }
        e->code = (int)code;
        return 0;
    }
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 5) {
        PyErr_SetString(PyExc_TypeError, "a table entry is an int code or a 5-tuple");
        return -1;
    }
    PyObject *idx = PyTuple_GET_ITEM(item, 4);
    if (!PyTuple_Check(idx) || PyTuple_GET_SIZE(idx) != NFIELDS) {
        PyErr_SetString(PyExc_TypeError, "a table entry's group indices are a 5-tuple");
        return -1;
    }
    for (int i = 0; i < NFIELDS; i++) {
        long g = PyLong_AsLong(PyTuple_GET_ITEM(idx, i));
        if (g == -1 && PyErr_Occurred()) return -1;
        if (g < 0 || (unsigned long)g > groups) {
            PyErr_Format(PyExc_ValueError, "group index %ld out of range", g);
            return -1;
        }
        e->group[i] = (uint32_t)g;
    }
    e->code = CODE_FAST;
    e->kind = PyTuple_GET_ITEM(item, 0);
    e->service = PyTuple_GET_ITEM(item, 1);
    e->pattern = PyTuple_GET_ITEM(item, 2);
    e->counting = PyTuple_GET_ITEM(item, 3);
    return 0;
}

static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"pattern", "captures", "table", "match_limit", NULL};
    PyObject *pattern, *table;
    unsigned int captures, match_limit = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "UIO!|I:Scanner", kwlist, &pattern, &captures, &PyList_Type,
                                     &table, &match_limit))
        return -1;
    if (self->code || self->entries || self->table) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner already initialised");
        return -1;
    }
    Py_ssize_t plen;
    const char *ptext = PyUnicode_AsUTF8AndSize(pattern, &plen);
    if (!ptext) return -1;
    if (!PyUnicode_IS_ASCII(pattern)) {
        PyErr_SetString(PyExc_ValueError, "the scanner regex must be ASCII");
        return -1;
    }
    pcre2_compile_context *cctx = pcre2_compile_context_create(NULL);
    if (!cctx) {
        PyErr_NoMemory();
        return -1;
    }
    pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
    int err;
    PCRE2_SIZE erroff;
    /* ANCHORED: one match per line start (JIT ignores PCRE2_ANCHORED given at match time);
     * ALT_CIRCUMFLEX: ^ also after a newline that ends the subject, as Python's (?m)^ does */
    self->code = pcre2_compile((PCRE2_SPTR)ptext, (PCRE2_SIZE)plen,
                               PCRE2_MULTILINE | PCRE2_ANCHORED | PCRE2_ALT_CIRCUMFLEX, &err, &erroff,
                               cctx);
    pcre2_compile_context_free(cctx);
    if (!self->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        PyErr_Format(PyExc_ValueError, "PCRE2 cannot compile the scanner regex at %zu: %s", (size_t)erroff,
                     (const char *)msg);
        return -1;
    }
    self->jit = pcre2_jit_compile(self->code, PCRE2_JIT_COMPLETE) == 0;
    uint32_t groups = 0;
    pcre2_pattern_info(self->code, PCRE2_INFO_CAPTURECOUNT, &groups);
    if (groups != captures) {
        PyErr_Format(PyExc_ValueError, "PCRE2 counts %u capture groups, the caller %u", groups, captures);
        return -1;
    }
    Py_ssize_t size = PyList_GET_SIZE(table);
    if (size < 2 || size > 100000) {
        PyErr_SetString(PyExc_ValueError, "the table size is out of range");
        return -1;
    }
    self->groups = groups;
    self->match_limit = match_limit;
    self->size = (uint32_t)size;
    self->entries = PyMem_Calloc((size_t)size, sizeof(Entry));
    if (!self->entries) {
        PyErr_NoMemory();
        return -1;
    }
    self->table = PyList_AsTuple(table); /* a private copy: the borrowed fields stay alive */
    if (!self->table) return -1;
    self->entries[0].code = CODE_SLOW;
    for (Py_ssize_t i = 1; i < size; i++)
        if (load_entry(&self->entries[i], PyTuple_GET_ITEM(self->table, i), groups) < 0) return -1;
    if (resources_make(self, &self->cached) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    self->ready = 1;
    return 0;
}

/* True when some byte of buf is in 0x1c..0x1f (whitespace to Python's \s, not to PCRE2's) */
static int has_info_separators(const unsigned char *buf, size_t n) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        uint64_t x = (w & 0xfcfcfcfcfcfcfcfcULL) ^ 0x1c1c1c1c1c1c1c1cULL; /* zero byte where 0x1c..0x1f */
        if ((x - ones) & ~x & highs) return 1;
    }
    for (; i < n; i++)
        if ((buf[i] & 0xfc) == 0x1c) return 1;
    return 0;
}

typedef enum { PASS_OK = 0, PASS_DECLINE = 1, PASS_NOMEM = 2 } PassResult;

/* First pass, without the GIL: one anchored match per line start in buf[0:end]. */
static PassResult match_lines(Scanner *self, Resources *r, const char *buf, size_t end, size_t *out_n) {
    size_t n = 0, pos = 0;
    if (!r->recs) {
        r->recs = PyMem_RawMalloc(1024 * sizeof(Rec));
        if (!r->recs) return PASS_NOMEM;
        r->cap = 1024;
    }
    Rec *recs = r->recs;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', end - pos);
        size_t line_end = nl ? (size_t)(nl - buf) : end;
        int rc = self->jit ? pcre2_jit_match(self->code, (PCRE2_SPTR)buf, end, pos, 0, r->md, r->mctx)
                           : pcre2_match(self->code, (PCRE2_SPTR)buf, end, pos, 0, r->md, r->mctx);
        /* the last mark passed names the Python group that closed last: Python's lastindex */
        PCRE2_SPTR mark = rc > 0 ? pcre2_get_mark(r->md) : NULL;
        uint32_t last = 0;
        if (mark) {
            for (; *mark >= '0' && *mark <= '9' && last < self->size; mark++) last = last * 10 + (*mark - '0');
        }
        /* a match that does not start here, runs into the next line or names no group: Python's finditer
         * would not agree with one match per line, so the pure path takes the chunk */
        if (!mark || *mark || last == 0 || last >= self->size || ov[0] != pos || ov[1] > line_end)
            return PASS_DECLINE;
        if (n == r->cap) {
            Rec *bigger = PyMem_RawRealloc(recs, 2 * r->cap * sizeof(Rec));
            if (!bigger) return PASS_NOMEM;
            r->recs = recs = bigger;
            r->cap *= 2;
        }
        Rec *rec = &recs[n++];
        rec->start = (uint32_t)pos;
        rec->end = (uint32_t)line_end; /* the regex ends with [^\n]*: every match ends at its line end */
        rec->entry = last;
        const Entry *e = &self->entries[last];
        if (e->code == CODE_FAST) {
            for (int f = 0; f < NFIELDS; f++) {
                uint32_t g = e->group[f];
                if (g > 0 && (int)g < rc && ov[2 * g] != PCRE2_UNSET) {
                    rec->span[2 * f] = (uint32_t)ov[2 * g];
                    rec->span[2 * f + 1] = (uint32_t)ov[2 * g + 1];
                } else {
                    rec->span[2 * f] = rec->span[2 * f + 1] = UNSET_OFF;
                }
            }
            if (rec->span[2 * F_TS] == UNSET_OFF) return PASS_DECLINE; /* not with logcompile's regex */
        }
        if (line_end >= end) break;
        pos = line_end + 1;
    }
    *out_n = n;
    return PASS_OK;
}

/* Memos of the second pass. `addr_*` and `minute_*` mirror a dict lookup, so they are dropped whenever
 * Python code runs (a callback may change the dicts); `stamp_*` mirrors _parse_chunk's own last_stamp. */
typedef struct {
    const char *addr;
    Py_ssize_t addr_len;
    PyObject *addr_value;
    const char *minute;
    PyObject *minute_value;
    const char *stamp;
    Py_ssize_t stamp_len;
    PyObject *stamp_ts;
} Memo;

static void memo_forget_lookups(Memo *m) {
    m->addr = NULL;
    Py_CLEAR(m->addr_value);
    m->minute = NULL;
    Py_CLEAR(m->minute_value);
}

/* a str equal to buf[s:e] (ASCII), from the resources' string cache when it holds one */
static PyObject *cached_str(PyObject **strings, const char *buf, uint32_t s, uint32_t e) {
    const unsigned char *p = (const unsigned char *)buf + s;
    size_t len = e - s;
    uint64_t h = len * 0x9e3779b97f4a7c15ULL;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) { /* a word at a time: these texts are short and hashed for every row */
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
    }
    if (i < len) {
        uint64_t w = 0;
        memcpy(&w, p + i, len - i);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
    }
    PyObject **slot = &strings[(h ^ (h >> 29) ^ (h >> 47)) & (STR_SLOTS - 1)];
    PyObject *old = *slot;
    if (old && (size_t)PyUnicode_GET_LENGTH(old) == len && memcmp(PyUnicode_DATA(old), p, len) == 0)
        return Py_NewRef(old);
    PyObject *str = PyUnicode_New((Py_ssize_t)len, 127);
    if (!str) return NULL;
    if (len) memcpy(PyUnicode_DATA(str), p, len);
    Py_XSETREF(*slot, Py_NewRef(str));
    return str;
}

static PyObject *field_str(PyObject **strings, const char *buf, const Rec *rec, int f) {
    uint32_t s = rec->span[2 * f];
    if (s == UNSET_OFF) Py_RETURN_NONE;
    return cached_str(strings, buf, s, rec->span[2 * f + 1]);
}

/* addresses[text]: the parser's _Cache (a dict whose __missing__ normalises and stores) */
static PyObject *address(PyObject **strings, const char *buf, const Rec *rec, PyObject *cache, Memo *m) {
    uint32_t s = rec->span[2 * F_ADDR];
    PyObject *key;
    if (s == UNSET_OFF) {
        key = Py_NewRef(Py_None);
    } else {
        Py_ssize_t len = rec->span[2 * F_ADDR + 1] - s;
        if (m->addr && m->addr_len == len && memcmp(m->addr, buf + s, len) == 0)
            return Py_NewRef(m->addr_value);
        key = cached_str(strings, buf, s, s + len);
        if (!key) return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(cache, key);
    if (value) {
        Py_INCREF(value);
    } else if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    } else {
        memo_forget_lookups(m);
        value = PyObject_GetItem(cache, key);
    }
    Py_DECREF(key);
    if (value && s != UNSET_OFF) {
        m->addr = buf + s;
        m->addr_len = rec->span[2 * F_ADDR + 1] - s;
        Py_XSETREF(m->addr_value, Py_NewRef(value));
    }
    return value;
}

static PyObject *call_text(PyObject *fn, PyObject *text, uint32_t s, uint32_t e, Memo *m) {
    PyObject *arg = PyUnicode_Substring(text, s, e);
    if (!arg) return NULL;
    memo_forget_lookups(m);
    PyObject *res = PyObject_CallOneArg(fn, arg);
    Py_DECREF(arg);
    return res;
}

/* the timestamp of a syslog line, as _parse_chunk computes it */
static PyObject *timestamp(PyObject *text, PyObject **strings, const char *buf, const Rec *rec, PyObject *minutes,
                           PyObject *bsd, PyObject *iso, Memo *m) {
    uint32_t s = rec->span[2 * F_TS], e = rec->span[2 * F_TS + 1];
    Py_ssize_t len = e - s;
    const char *p = buf + s;
    if (m->stamp && m->stamp_len == len && memcmp(m->stamp, p, len) == 0) return Py_NewRef(m->stamp_ts);
    PyObject *ts;
    if (len > 3 && p[3] == ' ') {
        PyObject *base = NULL; /* borrowed; NULL: not in the minute cache */
        Py_ssize_t key_len = len < 12 ? len : 12;
        if (m->minute && key_len == 12 && memcmp(m->minute, p, 12) == 0) {
            base = m->minute_value;
        } else {
            PyObject *key = cached_str(strings, buf, s, s + (uint32_t)key_len);
            if (!key) return NULL;
            base = PyDict_GetItemWithError(minutes, key);
            Py_DECREF(key);
            if (!base && PyErr_Occurred()) return NULL;
            if (base && key_len == 12) {
                m->minute = p;
                Py_XSETREF(m->minute_value, Py_NewRef(base));
            }
        }
        /* SECONDS.get(stamp[13:15]): "00".."60" */
        int sec = -1;
        if (len >= 15 && p[13] >= '0' && p[13] <= '9' && p[14] >= '0' && p[14] <= '9') {
            sec = (p[13] - '0') * 10 + (p[14] - '0');
            if (sec > 60) sec = -1;
        }
        if (!base || sec < 0) {
            ts = call_text(bsd, text, s, e, m);
        } else if (base == Py_None) {
            ts = Py_NewRef(Py_None);
        } else if (PyFloat_CheckExact(base)) {
            ts = PyFloat_FromDouble(PyFloat_AS_DOUBLE(base) + (double)sec);
        } else {
            PyObject *num = PyLong_FromLong(sec);
            ts = num ? PyNumber_Add(base, num) : NULL;
            Py_XDECREF(num);
        }
    } else {
        ts = call_text(iso, text, s, e, m);
    }
    if (!ts) return NULL;
    m->stamp = p;
    m->stamp_len = len;
    Py_XSETREF(m->stamp_ts, Py_NewRef(ts));
    return ts;
}

/* int(port) for the port group's text; None when there is none or int() refuses it */
static PyObject *port_number(PyObject *text, const char *buf, const Rec *rec) {
    uint32_t s = rec->span[2 * F_PORT], e = rec->span[2 * F_PORT + 1];
    if (s == UNSET_OFF) Py_RETURN_NONE;
    if (e > s && e - s <= 18) {
        long long v = 0;
        uint32_t i = s;
        for (; i < e && buf[i] >= '0' && buf[i] <= '9'; i++) v = v * 10 + (buf[i] - '0');
        if (i == e) return PyLong_FromLongLong(v);
    }
    PyObject *str = PyUnicode_Substring(text, s, e);
    if (!str) return NULL;
    PyObject *n = PyLong_FromUnicodeObject(str, 10);
    Py_DECREF(str);
    if (!n && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return n;
}

static int append_start(PyObject *starts, uint32_t start) {
    if (starts == Py_None) return 0;
    PyObject *n = PyLong_FromUnsignedLong(start);
    if (!n) return -1;
    int rc = PyList_Append(starts, n);
    Py_DECREF(n);
    return rc;
}

static PyObject *fast_row(PyObject *text, PyObject **strings, const char *buf, const Rec *rec, const Entry *e,
                          PyObject *addresses, PyObject *minutes, PyObject *bsd, PyObject *iso, Memo *m) {
    PyObject *user = field_str(strings, buf, rec, F_USER);
    PyObject *addr = user ? address(strings, buf, rec, addresses, m) : NULL;
    PyObject *method = addr ? field_str(strings, buf, rec, F_METHOD) : NULL;
    PyObject *ts = method ? timestamp(text, strings, buf, rec, minutes, bsd, iso, m) : NULL;
    PyObject *port = ts ? port_number(text, buf, rec) : NULL;
    PyObject *row = port ? PyTuple_New(9) : NULL;
    if (!row) {
        Py_XDECREF(user);
        Py_XDECREF(addr);
        Py_XDECREF(method);
        Py_XDECREF(ts);
        Py_XDECREF(port);
        return NULL;
    }
    PyTuple_SET_ITEM(row, 0, Py_NewRef(e->kind));
    PyTuple_SET_ITEM(row, 1, Py_NewRef(e->service));
    PyTuple_SET_ITEM(row, 2, user);
    PyTuple_SET_ITEM(row, 3, addr);
    PyTuple_SET_ITEM(row, 4, method);
    PyTuple_SET_ITEM(row, 5, ts);
    PyTuple_SET_ITEM(row, 6, Py_NewRef(e->pattern));
    PyTuple_SET_ITEM(row, 7, port);
    PyTuple_SET_ITEM(row, 8, Py_NewRef(e->counting));
    /* a tuple of strings and numbers can never be part of a cycle: the collector would untrack it at its
     * first pass (as it does the pure path's rows); doing it now spares every pass the walk */
    for (int i = 0; i < 9; i++)
        if (PyObject_IS_GC(PyTuple_GET_ITEM(row, i))) return row;
    PyObject_GC_UnTrack(row);
    return row;
}

/* Second pass, with the GIL: the rows of the matched lines, in order, as _parse_chunk builds them. */
static PyObject *build_rows(Scanner *self, Resources *r, size_t n, PyObject *text, const char *buf, PyObject *out,
                            PyObject *starts, PyObject *addresses, PyObject *minutes, PyObject *bsd, PyObject *iso,
                            PyObject *slow) {
    Py_ssize_t events = 0, skipped = 0, unmatched = 0, slowed = 0;
    Memo memo = {0};
    int failed = 0;
    for (size_t i = 0; i < n && !failed; i++) {
        const Rec *rec = &r->recs[i];
        const Entry *e = &self->entries[rec->entry];
        switch (e->code) {
        case CODE_SKIPPED:
            skipped++;
            break;
        case CODE_UNMATCHED:
            unmatched++;
            break;
        case CODE_SLOW: {
            PyObject *event = call_text(slow, text, rec->start, rec->end, &memo);
            if (!event) {
                failed = 1;
            } else if (event != Py_None) {
                failed = PyList_Append(out, event) < 0 || append_start(starts, rec->start) < 0;
                slowed++;
            }
            Py_XDECREF(event);
            break;
        }
        default: {
            PyObject *row = fast_row(text, r->strings, buf, rec, e, addresses, minutes, bsd, iso, &memo);
            if (!row) {
                failed = 1;
                break;
            }
            failed = PyList_Append(out, row) < 0 || append_start(starts, rec->start) < 0;
            Py_DECREF(row);
            events++;
        }
        }
    }
    memo_forget_lookups(&memo);
    Py_CLEAR(memo.stamp_ts);
    if (failed) return NULL;
    return Py_BuildValue("(nnnn)", events, slowed, skipped, unmatched);
}

static PyObject *Scanner_scan(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"text", "out", "starts", "addresses", "minutes", "bsd", "iso", "slow", NULL};
    PyObject *text, *out, *starts, *addresses, *minutes, *bsd, *iso, *slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "UO!OO!O!OOO:scan", kwlist, &text, &PyList_Type, &out, &starts,
                                     &PyDict_Type, &addresses, &PyDict_Type, &minutes, &bsd, &iso, &slow))
        return NULL;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner not initialised");
        return NULL;
    }
    if (starts != Py_None && !PyList_Check(starts)) {
        PyErr_SetString(PyExc_TypeError, "starts must be a list or None");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) Py_RETURN_NONE;
    const char *buf = (const char *)PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    if ((uint64_t)len >= (uint64_t)UNSET_OFF) Py_RETURN_NONE;
    size_t end = (len > 0 && buf[len - 1] == '\n') ? (size_t)len - 1 : (size_t)len;

    Resources own;
    memset(&own, 0, sizeof own);
    Resources *r = &self->cached;
    int borrowed = !self->busy;
    if (borrowed) {
        self->busy = 1;
    } else {
        if (resources_make(self, &own) < 0) return PyErr_NoMemory();
        r = &own;
    }
    size_t n = 0;
    PassResult pass;
    Py_BEGIN_ALLOW_THREADS
    pass = has_info_separators((const unsigned char *)buf, (size_t)len) ? PASS_DECLINE
                                                                        : match_lines(self, r, buf, end, &n);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (pass == PASS_OK) {
        result = build_rows(self, r, n, text, buf, out, starts, addresses, minutes, bsd, iso, slow);
    } else if (pass == PASS_NOMEM) {
        PyErr_NoMemory();
    } else {
        result = Py_NewRef(Py_None);
    }
    if (borrowed)
        self->busy = 0;
    else
        resources_free(&own);
    return result;
}

static PyObject *Scanner_get_jit(Scanner *self, void *closure) { return PyBool_FromLong(self->jit); }

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))Scanner_scan, METH_VARARGS | METH_KEYWORDS,
     "scan(text, out, starts, addresses, minutes, bsd, iso, slow) -> (events, slow, skipped, unmatched) | None\n\n"
     "Append the rows of a run of lines to `out` (and their line starts to `starts` unless None); None\n"
     "when the chunk is declined (nothing appended, nothing called): run the pure path over it."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scanner_getset[] = {
    {"jit", (getter)Scanner_get_jit, NULL, "True when PCRE2's JIT compiled the regex", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hostward.agent.detectors._logscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Scanner(pattern, captures, table, match_limit=0): the rewritten chunk regex compiled by PCRE2\n"
              "(JIT) and its table; a line over match_limit (0: PCRE2's default) makes scan decline the chunk.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "hostward.agent.detectors._logscan",
    "The login-log chunk parser's hot loop (PCRE2 JIT); pure-Python twin: LogParser._parse_chunk.",
    -1,
    NULL,
};

PyMODINIT_FUNC PyInit__logscan(void) {
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "SKIPPED", CODE_SKIPPED) < 0 ||
        PyModule_AddIntConstant(m, "UNMATCHED", CODE_UNMATCHED) < 0 ||
        PyModule_AddIntConstant(m, "SLOW", CODE_SLOW) < 0 ||
        PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
