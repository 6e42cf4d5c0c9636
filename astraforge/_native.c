/* Hot paths in C. The codec's fast path: Avro binary writers and readers driven by a "program" that
 * schemas/compiled.py builds once from a parsed schema (nested tuples, see ``programs`` there).
 *
 * It does exactly what the Python code that compiled.py generates does, ~5x faster: it takes only
 * the exact Python types the schema asks for, and anything else -- a value of another type, a body
 * that ends early, a negative block count, a long past 64 bits, text that is not UTF-8 -- raises
 * ``Unhandled`` so the codec asks fastavro (the reference). The tests run every case through both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

enum {
    OP_NULL = 0, OP_BOOLEAN = 1, OP_INT = 2, OP_LONG = 3, OP_DOUBLE = 4, OP_STRING = 5, OP_BYTES = 6,
    OP_ENUM = 7, OP_ARRAY = 8, OP_MAP = 9, OP_OPTIONAL = 10, OP_RECORD = 11, OP_RECORDS = 12,
    OP_UNHANDLED = 13,
};
enum { FROM_ATTRIBUTE = 0, FROM_VERSION = 1, FROM_PAYLOAD = 2 };

static PyObject *Unhandled;   /* compiled.Unhandled */
static PyObject *json_bytes;  /* compiled.json_bytes: bytes -> text or {"base64": ...} */

static int unhandled(void) {
    PyErr_SetNone(Unhandled);
    return -1;
}

/* -- programs ----------------------------------------------------------------------------------
 * op      = (code, ...)                 OP_ENUM: (code, {symbol: index}, (symbols...))
 *                                       OP_ARRAY / OP_MAP / OP_OPTIONAL: (code, op)
 *                                       OP_RECORD: (code, record); OP_RECORDS: (code, ((name, record), ...))
 * record  = (name, ((field, has_default, default, op), ...))
 * The tuples are built and checked by compiled.py; C trusts their shape. */
#define OP_CODE(op) PyLong_AsLong(PyTuple_GET_ITEM((op), 0))
#define OP_ARG(op, i) PyTuple_GET_ITEM((op), (i))

/* -- writing ----------------------------------------------------------------------------------- */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
    char small[512];
} Buffer;

static int grow(Buffer *b, Py_ssize_t need) {
    if (b->len + need <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + need)
        cap *= 2;
    char *data = b->data == b->small ? PyMem_Malloc(cap) : PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->data == b->small)
        memcpy(data, b->small, b->len);
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buffer *b, const char *bytes, Py_ssize_t n) {
    if (grow(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

static int put_long(Buffer *b, long long n) {
    uint64_t z = ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
    if (grow(b, 10) < 0)
        return -1;
    while (z >= 0x80) {
        b->data[b->len++] = (char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    b->data[b->len++] = (char)z;
    return 0;
}

static int write_value(PyObject *op, PyObject *v, Buffer *b);

static int write_record(PyObject *record, PyObject *d, Buffer *b) {
    if (!PyDict_CheckExact(d))
        return unhandled();
    static PyObject *type_key = NULL;  /* fastavro reads '-type' as a branch name */
    if (type_key == NULL && (type_key = PyUnicode_InternFromString("-type")) == NULL)
        return -1;
    int has = PyDict_Contains(d, type_key);
    if (has != 0)
        return has < 0 ? -1 : unhandled();
    PyObject *fields = PyTuple_GET_ITEM(record, 1);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        PyObject *v = PyDict_GetItemWithError(d, PyTuple_GET_ITEM(field, 0));
        if (v == NULL) {
            if (PyErr_Occurred())
                return -1;
            if (PyTuple_GET_ITEM(field, 1) != Py_True)
                return unhandled();  /* missing, no default: fastavro writes null or refuses */
            v = PyTuple_GET_ITEM(field, 2);
        }
        /* held: writing a nested record looks keys up, and a key's __eq__ can drop d's last
         * reference to v (the generated Python holds it in a local too) */
        Py_INCREF(v);
        int r = write_value(PyTuple_GET_ITEM(field, 3), v, b);
        Py_DECREF(v);
        if (r < 0)
            return -1;
    }
    return 0;
}

static int write_text(PyObject *v, Buffer *b) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);
    if (s == NULL)
        return -1;  /* lone surrogates: UnicodeEncodeError, as str.encode() raises */
    if (put_long(b, n) < 0)
        return -1;
    return put(b, s, n);
}

static int write_value(PyObject *op, PyObject *v, Buffer *b) {
    switch (OP_CODE(op)) {
    case OP_NULL:
        return v == Py_None ? 0 : unhandled();
    case OP_BOOLEAN:
        if (v != Py_True && v != Py_False)
            return unhandled();
        return put(b, v == Py_True ? "\x01" : "\x00", 1);
    case OP_INT:
    case OP_LONG: {
        if (!PyLong_CheckExact(v))
            return unhandled();
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (n == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return unhandled();
        }
        if (OP_CODE(op) == OP_INT && (n < INT32_MIN || n > INT32_MAX))
            return unhandled();
        return put_long(b, n);
    }
    case OP_DOUBLE: {
        if (!PyFloat_CheckExact(v))
            return unhandled();
        if (grow(b, 8) < 0)
            return -1;
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(v), b->data + b->len, 1) < 0)
            return -1;
        b->len += 8;
        return 0;
    }
    case OP_STRING:
        if (!PyUnicode_CheckExact(v))
            return unhandled();
        return write_text(v, b);
    case OP_BYTES:
        if (!PyBytes_CheckExact(v))
            return unhandled();
        if (put_long(b, PyBytes_GET_SIZE(v)) < 0)
            return -1;
        return put(b, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    case OP_ENUM: {
        if (!PyUnicode_CheckExact(v))
            return unhandled();
        PyObject *index = PyDict_GetItemWithError(OP_ARG(op, 1), v);
        if (index == NULL)
            return PyErr_Occurred() ? -1 : unhandled();
        return put_long(b, PyLong_AsLongLong(index));
    }
    case OP_ARRAY: {
        if (!PyList_CheckExact(v))
            return unhandled();
        Py_ssize_t n = PyList_GET_SIZE(v);
        if (n) {
            if (put_long(b, n) < 0)
                return -1;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
                PyObject *item = PyList_GET_ITEM(v, i);
                Py_INCREF(item);
                int r = write_value(OP_ARG(op, 1), item, b);
                Py_DECREF(item);
                if (r < 0)
                    return -1;
            }
        }
        return put(b, "\x00", 1);
    }
    case OP_MAP: {
        if (!PyDict_CheckExact(v))
            return unhandled();
        if (PyDict_GET_SIZE(v)) {
            if (put_long(b, PyDict_GET_SIZE(v)) < 0)
                return -1;
            Py_ssize_t pos = 0;
            PyObject *key, *val;
            while (PyDict_Next(v, &pos, &key, &val)) {
                if (!PyUnicode_CheckExact(key))
                    return unhandled();
                Py_INCREF(key);
                Py_INCREF(val);
                int r = write_text(key, b);
                if (r == 0)
                    r = write_value(OP_ARG(op, 1), val, b);
                Py_DECREF(key);
                Py_DECREF(val);
                if (r < 0)
                    return -1;
            }
        }
        return put(b, "\x00", 1);
    }
    case OP_OPTIONAL:
        if (v == Py_None)
            return put(b, "\x00", 1);
        if (PyTuple_CheckExact(v))
            return unhandled();  /* tuple notation names a branch: fastavro's */
        if (put(b, "\x02", 1) < 0)
            return -1;
        return write_value(OP_ARG(op, 1), v, b);
    case OP_RECORD:
        return write_record(OP_ARG(op, 1), v, b);
    default:
        return unhandled();
    }
}

/* write_envelope(program, envelope, version, record_name, out: bytearray) -> None
 * program = (((attribute, source, op), ...), {record name: (branch bytes, record)}) */
static PyObject *write_envelope(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyByteArray_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "write_envelope(program, envelope, version, record, out)");
        return NULL;
    }
    PyObject *program = args[0], *e = args[1], *version = args[2], *record = args[3], *out = args[4];
    Buffer b = {.len = 0, .cap = sizeof(b.small)};
    b.data = b.small;
    PyObject *fields = PyTuple_GET_ITEM(program, 0);
    int failed = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields) && !failed; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        long source = PyLong_AsLong(PyTuple_GET_ITEM(field, 1));
        if (source == FROM_PAYLOAD) {
            PyObject *branch = PyDict_GetItemWithError(PyTuple_GET_ITEM(program, 1), record);
            if (branch == NULL) {
                failed = PyErr_Occurred() ? 1 : (unhandled(), 1);
                break;
            }
            PyObject *payload = PyObject_GetAttr(e, PyTuple_GET_ITEM(field, 0));
            if (payload == NULL) {
                failed = 1;
                break;
            }
            PyObject *index = PyTuple_GET_ITEM(branch, 0);
            failed = put(&b, PyBytes_AS_STRING(index), PyBytes_GET_SIZE(index)) < 0 ||
                     write_record(PyTuple_GET_ITEM(branch, 1), payload, &b) < 0;
            Py_DECREF(payload);
            continue;
        }
        PyObject *v;
        if (source == FROM_VERSION) {
            v = version;
            Py_INCREF(v);
        } else if ((v = PyObject_GetAttr(e, PyTuple_GET_ITEM(field, 0))) == NULL) {
            failed = 1;
            break;
        }
        failed = write_value(PyTuple_GET_ITEM(field, 2), v, &b) < 0;
        Py_DECREF(v);
    }
    if (!failed) {
        Py_ssize_t start = PyByteArray_GET_SIZE(out);
        if (PyByteArray_Resize(out, start + b.len) < 0)
            failed = 1;
        else
            memcpy(PyByteArray_AS_STRING(out) + start, b.data, b.len);
    }
    if (b.data != b.small)
        PyMem_Free(b.data);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* -- reading ----------------------------------------------------------------------------------- */
typedef struct {
    const unsigned char *data;
    Py_ssize_t pos, len;
    int json;  /* values JSON-safe: bytes through json_bytes; text with NUL, NaN and infinity refused */
} Reader;

static int read_long(Reader *r, long long *out) {
    uint64_t n = 0;
    int shift = 0;
    for (;;) {
        if (r->pos >= r->len)
            return unhandled();
        unsigned char b = r->data[r->pos++];
        if (shift == 63 && b > 1)
            return unhandled();  /* past 64 bits: fastavro says what it is */
        n |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80)
            break;
        shift += 7;
        if (shift > 63)
            return unhandled();
    }
    *out = (long long)(n >> 1) ^ -(long long)(n & 1);
    return 0;
}

static int read_span(Reader *r, const char **start, Py_ssize_t *n) {
    long long len;
    if (read_long(r, &len) < 0)
        return -1;
    if (len < 0 || len > r->len - r->pos)
        return unhandled();
    *start = (const char *)r->data + r->pos;
    *n = (Py_ssize_t)len;
    r->pos += (Py_ssize_t)len;
    return 0;
}

static PyObject *read_text(Reader *r) {
    const char *s;
    Py_ssize_t n;
    if (read_span(r, &s, &n) < 0)
        return NULL;
    if (r->json && memchr(s, 0, n) != NULL) {
        unhandled();  /* text with NUL: the codec's slow path base64s it */
        return NULL;
    }
    PyObject *text = PyUnicode_DecodeUTF8(s, n, NULL);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        unhandled();
    }
    return text;
}

static PyObject *read_bytes(Reader *r) {
    const char *s;
    Py_ssize_t n;
    if (read_span(r, &s, &n) < 0)
        return NULL;
    if (r->json && memchr(s, 0, n) == NULL) {
        PyObject *text = PyUnicode_DecodeUTF8(s, n, NULL);
        if (text != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return text;
        PyErr_Clear();
    }
    PyObject *raw = PyBytes_FromStringAndSize(s, n);
    if (raw == NULL || !r->json)
        return raw;
    PyObject *safe = PyObject_CallOneArg(json_bytes, raw);  /* binary: {"base64": ...} */
    Py_DECREF(raw);
    return safe;
}

static PyObject *read_value(PyObject *op, Reader *r);

static PyObject *read_record(PyObject *record, Reader *r) {
    PyObject *fields = PyTuple_GET_ITEM(record, 1);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        PyObject *v = read_value(PyTuple_GET_ITEM(field, 3), r);
        if (v == NULL || PyDict_SetItem(d, PyTuple_GET_ITEM(field, 0), v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

/* a block count: 0 ends the array or map; negative (a block with its size) is fastavro's; a count
 * past the bytes left cannot be honest (every item but null takes a byte) and could ask for a huge list */
static int read_count(Reader *r, long long *count) {
    if (read_long(r, count) < 0)
        return -1;
    if (*count < 0 || *count > r->len - r->pos)
        return unhandled();
    return 0;
}

static PyObject *read_value(PyObject *op, Reader *r) {
    switch (OP_CODE(op)) {
    case OP_NULL:
        Py_RETURN_NONE;
    case OP_BOOLEAN: {
        if (r->pos >= r->len || r->data[r->pos] > 1) {
            unhandled();
            return NULL;
        }
        return PyBool_FromLong(r->data[r->pos++]);
    }
    case OP_INT:
    case OP_LONG: {
        long long n;
        if (read_long(r, &n) < 0)
            return NULL;
        if (OP_CODE(op) == OP_INT && (n < INT32_MIN || n > INT32_MAX)) {
            unhandled();
            return NULL;
        }
        return PyLong_FromLongLong(n);
    }
    case OP_DOUBLE: {
        if (r->len - r->pos < 8) {
            unhandled();
            return NULL;
        }
        double x = PyFloat_Unpack8((const char *)r->data + r->pos, 1);
        if (x == -1.0 && PyErr_Occurred())
            return NULL;
        if (r->json && !isfinite(x)) {
            unhandled();  /* JSON has no NaN or infinity: the full path decides */
            return NULL;
        }
        r->pos += 8;
        return PyFloat_FromDouble(x);
    }
    case OP_STRING:
        return read_text(r);
    case OP_BYTES:
        return read_bytes(r);
    case OP_ENUM: {
        long long i;
        if (read_long(r, &i) < 0)
            return NULL;
        PyObject *symbols = OP_ARG(op, 2);
        if (i < 0 || i >= PyTuple_GET_SIZE(symbols)) {
            unhandled();
            return NULL;
        }
        PyObject *symbol = PyTuple_GET_ITEM(symbols, i);
        Py_INCREF(symbol);
        return symbol;
    }
    case OP_ARRAY: {
        PyObject *list = PyList_New(0);
        long long count;
        while (list != NULL) {
            if (read_count(r, &count) < 0)
                goto array_failed;
            if (count == 0)
                return list;
            for (long long i = 0; i < count; i++) {
                PyObject *item = read_value(OP_ARG(op, 1), r);
                if (item == NULL || PyList_Append(list, item) < 0) {
                    Py_XDECREF(item);
                    goto array_failed;
                }
                Py_DECREF(item);
            }
        }
        return NULL;
    array_failed:
        Py_DECREF(list);
        return NULL;
    }
    case OP_MAP: {
        PyObject *map = PyDict_New();
        long long count;
        while (map != NULL) {
            if (read_count(r, &count) < 0)
                goto map_failed;
            if (count == 0)
                return map;
            for (long long i = 0; i < count; i++) {
                PyObject *key = read_text(r);
                PyObject *val = key ? read_value(OP_ARG(op, 1), r) : NULL;
                int failed = val == NULL || PyDict_SetItem(map, key, val) < 0;
                Py_XDECREF(key);
                Py_XDECREF(val);
                if (failed)
                    goto map_failed;
            }
        }
        return NULL;
    map_failed:
        Py_DECREF(map);
        return NULL;
    }
    case OP_OPTIONAL: {
        if (r->pos >= r->len) {
            unhandled();
            return NULL;
        }
        unsigned char branch = r->data[r->pos++];
        if (branch == 0)
            Py_RETURN_NONE;
        if (branch == 2)
            return read_value(OP_ARG(op, 1), r);
        unhandled();
        return NULL;
    }
    case OP_RECORD:
        return read_record(OP_ARG(op, 1), r);
    case OP_RECORDS: {
        long long i;
        if (read_long(r, &i) < 0)
            return NULL;
        PyObject *branches = OP_ARG(op, 1);
        if (i < 0 || i >= PyTuple_GET_SIZE(branches)) {
            unhandled();
            return NULL;
        }
        PyObject *branch = PyTuple_GET_ITEM(branches, i);
        PyObject *value = read_record(PyTuple_GET_ITEM(branch, 1), r);
        if (value == NULL)
            return NULL;
        PyObject *named = PyTuple_Pack(2, PyTuple_GET_ITEM(branch, 0), value);  /* as return_record_name gives it */
        Py_DECREF(value);
        return named;
    }
    default:
        unhandled();
        return NULL;
    }
}

static int reader_of(PyObject *data, PyObject *pos, int json, Reader *r) {
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return -1;
    }
    r->data = (const unsigned char *)PyBytes_AS_STRING(data);
    r->len = PyBytes_GET_SIZE(data);
    r->pos = PyLong_AsSsize_t(pos);
    r->json = json;
    if (r->pos == -1 && PyErr_Occurred())
        return -1;
    if (r->pos < 0 || r->pos > r->len)
        return unhandled();
    return 0;
}

/* read_record(record, json, data, pos) -> (dict, pos) */
static PyObject *read_record_at(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Reader r;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "read_record(record, json, data, pos)");
        return NULL;
    }
    if (reader_of(args[2], args[3], PyObject_IsTrue(args[1]), &r) < 0)
        return NULL;
    PyObject *d = read_record(args[0], &r);
    if (d == NULL)
        return NULL;
    PyObject *result = Py_BuildValue("(Nn)", d, r.pos);
    return result;
}

/* read_fields(record, order, data, pos) -> (tuple of the fields at the indices ``order``, pos); JSON-safe */
static PyObject *read_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Reader r;
    if (nargs != 4 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "read_fields(record, order, data, pos)");
        return NULL;
    }
    if (reader_of(args[2], args[3], 1, &r) < 0)
        return NULL;
    PyObject *fields = PyTuple_GET_ITEM(args[0], 1), *order = args[1];
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    PyObject *values[64];
    if (n > 64)
        return unhandled(), NULL;
    Py_ssize_t done = 0;
    for (; done < n; done++) {
        values[done] = read_value(PyTuple_GET_ITEM(PyTuple_GET_ITEM(fields, done), 3), &r);
        if (values[done] == NULL)
            break;
    }
    PyObject *result = NULL;
    if (done == n) {
        PyObject *picked = PyTuple_New(PyTuple_GET_SIZE(order));
        for (Py_ssize_t i = 0; picked != NULL && i < PyTuple_GET_SIZE(order); i++) {
            PyObject *v = values[PyLong_AsSsize_t(PyTuple_GET_ITEM(order, i))];
            Py_INCREF(v);
            PyTuple_SET_ITEM(picked, i, v);
        }
        if (picked != NULL)
            result = Py_BuildValue("(Nn)", picked, r.pos);
    }
    for (Py_ssize_t i = 0; i < done; i++)
        Py_DECREF(values[i]);
    return result;
}

/* -- ids -----------------------------------------------------------------------------------------
 * new_id() -> str: astraforge.ids.new_id (read its docstring) without ~3 µs of Python integer and
 * text work per event. Runs holding the GIL from start to end, so its clock and counter are the
 * process's one sequence as in Python. */
static uint64_t id_last_ms = 0;
static unsigned id_seq = 0;

static void put_hex(char *out, uint64_t value, int digits) {
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--, value >>= 4)
        out[i] = hex[value & 0xF];
}

static PyObject *new_id(PyObject *self, PyObject *unused) {
    struct timespec now;
    unsigned char r[10];
    if (clock_gettime(CLOCK_REALTIME, &now) != 0 || getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return PyErr_SetFromErrno(PyExc_OSError);
    uint64_t ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    unsigned start = ((unsigned)r[0] << 3) | (r[1] >> 5);  /* 11 random bits: 2048 more ids fit */
    uint64_t rand62 = 0;
    for (int i = 2; i < 10; i++)
        rand62 = (rand62 << 8) | r[i];
    rand62 &= (UINT64_C(1) << 62) - 1;
    if (ms > id_last_ms) {
        id_last_ms = ms;
        id_seq = start;
    } else if (id_seq < 0xFFF) {
        id_seq++;
    } else {
        id_last_ms++;
        id_seq = start;
    }
    uint64_t high = (id_last_ms & UINT64_C(0xFFFFFFFFFFFF)) << 16 | UINT64_C(0x7) << 12 | id_seq;
    uint64_t low = UINT64_C(0x2) << 62 | rand62;
    char text[36];
    put_hex(text, high >> 32, 8);
    text[8] = '-';
    put_hex(text + 9, (high >> 16) & 0xFFFF, 4);
    text[13] = '-';
    put_hex(text + 14, high & 0xFFFF, 4);
    text[18] = '-';
    put_hex(text + 19, low >> 48, 4);
    text[23] = '-';
    put_hex(text + 24, low & UINT64_C(0xFFFFFFFFFFFF), 12);
    return PyUnicode_FromStringAndSize(text, sizeof(text));
}

/* configure(Unhandled, json_bytes): what the fast path raises, and how it makes bytes JSON-safe */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *exc, *fn;
    if (!PyArg_ParseTuple(args, "OO", &exc, &fn))
        return NULL;
    Py_XSETREF(Unhandled, Py_NewRef(exc));
    Py_XSETREF(json_bytes, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"new_id", new_id, METH_NOARGS, "new_id() -> a UUIDv7 as text (see astraforge.ids.new_id)"},
    {"configure", configure, METH_VARARGS, "configure(Unhandled, json_bytes)"},
    {"write_envelope", (PyCFunction)(void (*)(void))write_envelope, METH_FASTCALL,
     "write_envelope(program, envelope, version, record_name, out)"},
    {"read_record", (PyCFunction)(void (*)(void))read_record_at, METH_FASTCALL,
     "read_record(record, json, data, pos) -> (dict, pos)"},
    {"read_fields", (PyCFunction)(void (*)(void))read_fields, METH_FASTCALL,
     "read_fields(record, order, data, pos) -> (tuple, pos)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
