/* hostward.agent.fim._fimscan: FIM per-file recording in C (the twin of reader.PathReader._scan_file).
 *
 * record() opens, fstat()s, reads the inode flags and xattrs of, and hashes (OpenSSL SHA-256) a list of
 * regular files relative to one directory descriptor, and returns rows identical to the pure-Python
 * path. listdir() lists one directory descriptor split into regular files, directories and the rest.
 * The system calls and the hashing run without the GIL, in blocks of names, so that threads work in
 * parallel; rows are built with the GIL held. Whatever is unusual (an open that fails, a NUL in a name)
 * is handed back to the caller, whose pure-Python path records it exactly as before.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define SMALL_FILE (256 * 1024)  /* reader.SMALL_FILE: read in one call below this size */
#define CHUNK (1024 * 1024)      /* model.CHUNK: the caller's read buffer */
#define FIM_GETFLAGS 0x80086601UL /* model.FS_IOC_GETFLAGS */
#define TRACKED_FLAGS 0x30U       /* model.TRACKED_FLAGS: immutable | append-only */
#define XLIST_FIRST 256           /* the first list size os.listxattr tries */
#define XATTR_MAX 65536           /* the largest list or value os.listxattr / os.getxattr accept */
#define BLOCK 128                 /* names per GIL release */

enum { R_ROW, R_STATONLY, R_CALLER };

typedef struct {
    int kind;
    int err;          /* errno of a failed read (0: none) */
    int has_flags;
    int has_digest;
    unsigned int flags;
    struct stat st;
    unsigned char digest[32];
    char *xattrs;     /* unsorted (u16 name length, name, u32 value length, value)... */
    size_t xattrs_len;
    int xattrs_ascii; /* every name is ASCII: sorting the raw bytes sorts as Python sorts the names */
} Result;

typedef struct {
    unsigned long long *devs;
    size_t n, cap;
    int grew;
} DevSet;

static int devset_has(const DevSet *s, unsigned long long dev) {
    for (size_t i = 0; i < s->n; i++)
        if (s->devs[i] == dev) return 1;
    return 0;
}

/* Without the GIL: a failed allocation only means the device is not remembered (asked again). */
static void devset_add(DevSet *s, unsigned long long dev) {
    if (devset_has(s, dev)) return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        unsigned long long *grown = realloc(s->devs, cap * sizeof *grown);
        if (grown == NULL) return;
        s->devs = grown;
        s->cap = cap;
    }
    s->devs[s->n++] = dev;
    s->grew = 1;
}

static int devset_load(DevSet *s, PyObject *set) {
    s->devs = NULL;
    s->n = s->cap = 0;
    s->grew = 0;
    if (!PyAnySet_Check(set)) {
        PyErr_SetString(PyExc_TypeError, "device memory must be a set");
        return -1;
    }
    PyObject *it = PyObject_GetIter(set);
    if (it == NULL) return -1;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        unsigned long long dev = PyLong_Check(item) ? PyLong_AsUnsignedLongLong(item) : (unsigned long long)-1;
        Py_DECREF(item);
        if (PyErr_Occurred()) {
            PyErr_Clear(); /* not a device number: cannot match one */
            continue;
        }
        devset_add(s, dev);
    }
    Py_DECREF(it);
    s->grew = 0;
    return PyErr_Occurred() ? -1 : 0;
}

/* With the GIL: add the devices found during the call to the caller's set. */
static int devset_store(DevSet *s, size_t from, PyObject *set) {
    for (size_t i = from; i < s->n; i++) {
        PyObject *dev = PyLong_FromUnsignedLongLong(s->devs[i]);
        if (dev == NULL || PySet_Add(set, dev) < 0) {
            Py_XDECREF(dev);
            return -1;
        }
        Py_DECREF(dev);
    }
    return 0;
}

static ssize_t read_full(int fd, unsigned char *buf, size_t n) {
    ssize_t got;
    do {
        got = read(fd, buf, n);
    } while (got < 0 && errno == EINTR);
    return got;
}

/* Hash the rest of the file through buf; 0 or an errno. Adds what was read to *nbytes. */
static int hash_rest(int fd, EVP_MD_CTX *ctx, unsigned char *buf, size_t cap, unsigned long long *nbytes) {
    for (;;) {
        ssize_t got = read_full(fd, buf, cap);
        if (got < 0) return errno;
        if (got == 0) return 0;
        *nbytes += (unsigned long long)got;
        if (!EVP_DigestUpdate(ctx, buf, (size_t)got)) return EIO;
    }
}

static int is_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] & 0x80) return 0;
    return 1;
}

/* The xattrs of fd as an unsorted packed blob, like PathReader._xattrs: None (NULL) when there are none
 * or when listing or reading any of them fails; devices without xattrs are remembered. */
static void read_xattrs(int fd, unsigned long long dev, DevSet *no_xattr, Result *r) {
    char first[XLIST_FIRST];
    char *list = first;
    ssize_t n = flistxattr(fd, first, sizeof first);
    if (n < 0 && errno == ERANGE) {
        list = malloc(XATTR_MAX);
        if (list == NULL) return;
        n = flistxattr(fd, list, XATTR_MAX);
    }
    if (n < 0) {
        if (errno == ENOTSUP || errno == ENOSYS) devset_add(no_xattr, dev);
        goto out;
    }
    if (n == 0) goto out;
    size_t cap = 4096, len = 0;
    char *blob = malloc(cap);
    if (blob == NULL) goto out;
    int ascii = 1;
    for (char *name = list; name < list + n; name += strlen(name) + 1) {
        size_t nlen = strnlen(name, (size_t)(list + n - name));
        ssize_t vlen = fgetxattr(fd, name, NULL, 0);
        if (vlen < 0 || vlen > XATTR_MAX) {
            if (vlen < 0 && (errno == ENOTSUP || errno == ENOSYS)) devset_add(no_xattr, dev);
            free(blob);
            goto out;
        }
        size_t need = len + 2 + nlen + 4 + (size_t)vlen;
        if (need > cap) {
            while (cap < need) cap *= 2;
            char *grown = realloc(blob, cap);
            if (grown == NULL) {
                free(blob);
                goto out;
            }
            blob = grown;
        }
        blob[len] = (char)(nlen >> 8);
        blob[len + 1] = (char)nlen;
        memcpy(blob + len + 2, name, nlen);
        size_t at = len + 2 + nlen + 4;
        ssize_t got = fgetxattr(fd, name, blob + at, (size_t)vlen);
        if (got < 0) { /* changed in between (ERANGE) or removed: as os.getxattr failing, no xattrs */
            if (errno == ENOTSUP || errno == ENOSYS) devset_add(no_xattr, dev);
            free(blob);
            goto out;
        }
        blob[at - 4] = (char)(got >> 24);
        blob[at - 3] = (char)(got >> 16);
        blob[at - 2] = (char)(got >> 8);
        blob[at - 1] = (char)got;
        len = at + (size_t)got;
        ascii &= is_ascii(name, nlen);
    }
    r->xattrs = blob;
    r->xattrs_len = len;
    r->xattrs_ascii = ascii;
out:
    if (list != first) free(list);
}

typedef struct {
    int dir_fd;
    int o_flags;
    long long limit;
    unsigned char *buf;
    size_t cap;
    EVP_MD_CTX *ctx;
    const EVP_MD *md;
    DevSet no_flags, no_xattr;
    unsigned long long nbytes;
} Job;

/* One file, without the GIL (PathReader._scan_file after a successful open). */
static void record_one(Job *job, const char *name, Result *r) {
    memset(r, 0, sizeof *r);
    int fd;
    do {
        fd = openat(job->dir_fd, name, job->o_flags);
        if (fd < 0 && errno == EPERM && (job->o_flags & O_NOATIME)) {
            job->o_flags &= ~O_NOATIME; /* not the owner and not root: ask for atime updates back */
            continue;
        }
        break;
    } while (1);
    if (fd < 0) {
        r->kind = R_CALLER; /* vanished, unreadable, replaced by a symlink/FIFO...: the caller records it */
        return;
    }
    if (fstat(fd, &r->st) < 0 || (job->limit > 0 && S_ISREG(r->st.st_mode) && r->st.st_size >= job->limit)) {
        r->kind = R_CALLER;
        close(fd);
        return;
    }
    if (!S_ISREG(r->st.st_mode)) {
        r->kind = R_STATONLY; /* replaced by a FIFO/device between listing and open: attributes only */
        close(fd);
        return;
    }
    r->kind = R_ROW;
    unsigned long long dev = (unsigned long long)r->st.st_dev;
    if (!devset_has(&job->no_flags, dev)) {
        int raw[2] = {0, 0};
        if (ioctl(fd, FIM_GETFLAGS, raw) == 0) {
            r->has_flags = 1;
            r->flags = (unsigned int)raw[0] & TRACKED_FLAGS;
        } else if (errno == ENOTTY || errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS) {
            devset_add(&job->no_flags, dev);
        }
    }
    if (!devset_has(&job->no_xattr, dev)) read_xattrs(fd, dev, &job->no_xattr, r);
    off_t size = r->st.st_size;
    int err = 0;
    if (!EVP_DigestInit_ex(job->ctx, job->md, NULL)) {
        err = EIO;
    } else if (size < SMALL_FILE) {
        ssize_t got = read_full(fd, job->buf, (size_t)size + 1);
        if (got < 0) {
            err = errno;
        } else {
            job->nbytes += (unsigned long long)got;
            if (!EVP_DigestUpdate(job->ctx, job->buf, (size_t)got))
                err = EIO;
            else if (got > size) /* grew since fstat */
                err = hash_rest(fd, job->ctx, job->buf, job->cap, &job->nbytes);
        }
    } else {
        err = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        if (!err) err = hash_rest(fd, job->ctx, job->buf, job->cap, &job->nbytes);
    }
    if (!err) {
        unsigned int dlen = 0;
        if (EVP_DigestFinal_ex(job->ctx, r->digest, &dlen) && dlen == 32)
            r->has_digest = 1;
        else
            err = EIO;
    }
    r->err = err;
    close(fd);
}

/* errno.errorcode.get(code, "EIO"), as the pure path names errors. */
static PyObject *errno_name(int code) {
    PyObject *mod = PyImport_ImportModule("errno");
    if (mod == NULL) return NULL;
    PyObject *table = PyObject_GetAttrString(mod, "errorcode");
    Py_DECREF(mod);
    if (table == NULL) return NULL;
    PyObject *key = PyLong_FromLong(code);
    PyObject *name = key ? PyObject_GetItem(table, key) : NULL;
    Py_XDECREF(key);
    Py_DECREF(table);
    if (name == NULL && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        name = PyUnicode_FromString("EIO");
    }
    return name;
}

static PyObject *ns_time(struct timespec ts) {
    long long sec = (long long)ts.tv_sec;
    if (sec > -9000000000LL && sec < 9000000000LL) return PyLong_FromLongLong(sec * 1000000000LL + ts.tv_nsec);
    PyObject *s = PyLong_FromLongLong(sec), *g = PyLong_FromLong(1000000000L), *n = PyLong_FromLong(ts.tv_nsec);
    PyObject *m = (s && g) ? PyNumber_Multiply(s, g) : NULL;
    PyObject *out = (m && n) ? PyNumber_Add(m, n) : NULL;
    Py_XDECREF(s);
    Py_XDECREF(g);
    Py_XDECREF(n);
    Py_XDECREF(m);
    return out;
}

typedef struct {
    const char *name;
    size_t nlen;
    const char *whole;
    size_t len;
} XEntry;

static int xentry_cmp(const void *a, const void *b) {
    const XEntry *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return (x->nlen > y->nlen) - (x->nlen < y->nlen);
}

/* The packed xattrs exactly as model.pack_xattrs makes them (sorted by name). */
static PyObject *packed_xattrs(const Result *r) {
    size_t count = 0;
    for (size_t i = 0; i < r->xattrs_len; count++) {
        size_t nlen = ((unsigned char)r->xattrs[i] << 8) | (unsigned char)r->xattrs[i + 1];
        const unsigned char *v = (const unsigned char *)r->xattrs + i + 2 + nlen;
        size_t vlen = ((size_t)v[0] << 24) | ((size_t)v[1] << 16) | ((size_t)v[2] << 8) | v[3];
        i += 2 + nlen + 4 + vlen;
    }
    XEntry *entries = PyMem_Malloc(count * sizeof *entries);
    if (entries == NULL) return PyErr_NoMemory();
    size_t i = 0;
    for (size_t k = 0; k < count; k++) {
        size_t nlen = ((unsigned char)r->xattrs[i] << 8) | (unsigned char)r->xattrs[i + 1];
        const unsigned char *v = (const unsigned char *)r->xattrs + i + 2 + nlen;
        size_t vlen = ((size_t)v[0] << 24) | ((size_t)v[1] << 16) | ((size_t)v[2] << 8) | v[3];
        entries[k] = (XEntry){r->xattrs + i + 2, nlen, r->xattrs + i, 2 + nlen + 4 + vlen};
        i += entries[k].len;
    }
    PyObject *out = NULL;
    if (r->xattrs_ascii) {
        qsort(entries, count, sizeof *entries, xentry_cmp);
        out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)r->xattrs_len);
        if (out != NULL) {
            char *dst = PyBytes_AS_STRING(out);
            for (size_t k = 0; k < count; k++) {
                memcpy(dst, entries[k].whole, entries[k].len);
                dst += entries[k].len;
            }
        }
    } else {
        /* Names outside ASCII: Python sorts the decoded names; let model.pack_xattrs do it. */
        PyObject *pairs = PyList_New((Py_ssize_t)count);
        for (size_t k = 0; pairs != NULL && k < count; k++) {
            PyObject *pair = Py_BuildValue(
                "(Ny#)", PyUnicode_DecodeFSDefaultAndSize(entries[k].name, (Py_ssize_t)entries[k].nlen),
                entries[k].name + entries[k].nlen + 4, (Py_ssize_t)(entries[k].len - entries[k].nlen - 6));
            if (pair == NULL) Py_CLEAR(pairs);
            else PyList_SET_ITEM(pairs, (Py_ssize_t)k, pair);
        }
        PyObject *model = pairs ? PyImport_ImportModule("hostward.agent.fim.model") : NULL;
        if (model != NULL) {
            out = PyObject_CallMethod(model, "pack_xattrs", "O", pairs);
            Py_DECREF(model);
        }
        Py_XDECREF(pairs);
    }
    PyMem_Free(entries);
    return out;
}

/* As os.stat gives owner ids: (uid_t)-1 is -1. */
static PyObject *id_long(unsigned int id) {
    return id == (unsigned int)-1 ? PyLong_FromLong(-1) : PyLong_FromUnsignedLong(id);
}

static PyObject *build_row(PyObject *prefix, PyObject *name, const Result *r) {
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix), nlen = PyBytes_GET_SIZE(name);
    PyObject *path = PyBytes_FromStringAndSize(NULL, plen + nlen);
    if (path == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(path), PyBytes_AS_STRING(prefix), (size_t)plen);
    memcpy(PyBytes_AS_STRING(path) + plen, PyBytes_AS_STRING(name), (size_t)nlen);
    PyObject *row = PyTuple_New(13);
    if (row == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    int row_kind = r->kind == R_ROW;
    PyObject *items[13] = {
        path,
        PyLong_FromUnsignedLong((unsigned long)r->st.st_mode),
        id_long(r->st.st_uid),
        id_long(r->st.st_gid),
        PyLong_FromLongLong((long long)r->st.st_size),
        PyLong_FromUnsignedLongLong((unsigned long long)r->st.st_ino),
        ns_time(r->st.st_mtim),
        ns_time(r->st.st_ctim),
        row_kind && r->has_digest ? PyBytes_FromStringAndSize((const char *)r->digest, 32) : Py_NewRef(Py_None),
        row_kind && r->has_flags ? PyLong_FromUnsignedLong(r->flags) : Py_NewRef(Py_None),
        row_kind && r->xattrs != NULL ? packed_xattrs(r) : Py_NewRef(Py_None),
        Py_NewRef(Py_None),
        row_kind && r->err ? errno_name(r->err) : Py_NewRef(Py_None),
    };
    int failed = 0;
    for (int i = 0; i < 13; i++) {
        if (items[i] == NULL) failed = 1;
        PyTuple_SET_ITEM(row, i, items[i] ? items[i] : Py_NewRef(Py_None));
    }
    if (failed) Py_CLEAR(row);
    return row;
}

/* A private tuple of the bytes in ``arg`` (TypeError for anything else). */
static PyObject *bytes_tuple(PyObject *arg) {
    PyObject *names = PySequence_Tuple(arg);
    if (names == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(names, i))) {
            Py_DECREF(names);
            PyErr_SetString(PyExc_TypeError, "names must be bytes");
            return NULL;
        }
    }
    return names;
}

PyDoc_STRVAR(record_doc,
             "record(dir_fd, prefix, names, o_flags, no_flags, no_xattr, buf, limit=0)\n"
             "-> (rows, left, o_flags, nbytes)\n\n"
             "Rows of the regular files ``names`` (relative to ``dir_fd``; -100 = AT_FDCWD), paths\n"
             "``prefix + name``. ``left``: names for the caller's pure path (the open failed, or the file\n"
             "is ``limit`` bytes or more when ``limit`` > 0). ``o_flags`` without O_NOATIME once an open\n"
             "needed that; ``nbytes``: content bytes read. Devices found without inode flags or xattrs are\n"
             "added to the sets ``no_flags`` / ``no_xattr``. ``buf``: a writable buffer of at least 1 MiB,\n"
             "or None.");

static PyObject *fim_record(PyObject *self, PyObject *args) {
    int dir_fd, o_flags;
    PyObject *prefix, *names_arg, *no_flags_set, *no_xattr_set, *buf_obj;
    long long limit = 0;
    if (!PyArg_ParseTuple(args, "iSOiOOO|L:record", &dir_fd, &prefix, &names_arg, &o_flags, &no_flags_set,
                          &no_xattr_set, &buf_obj, &limit))
        return NULL;
    PyObject *names = bytes_tuple(names_arg); /* a private copy: the list may change meanwhile */
    if (names == NULL) return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    Job job = {.dir_fd = dir_fd, .o_flags = o_flags, .limit = limit};
    Py_buffer view = {0};
    int have_view = 0;
    PyObject *rows = NULL, *left = NULL, *result = NULL;
    Result *results = NULL;
    EVP_MD *md = NULL;
    int flags_loaded = 0, xattr_loaded = 0;
    if (buf_obj != Py_None) {
        if (PyObject_GetBuffer(buf_obj, &view, PyBUF_WRITABLE) < 0) goto done;
        have_view = 1;
        if (view.len < CHUNK) {
            PyErr_SetString(PyExc_ValueError, "buf must hold at least 1 MiB");
            goto done;
        }
        job.buf = view.buf;
        job.cap = (size_t)view.len;
    } else {
        job.buf = PyMem_RawMalloc(CHUNK);
        if (job.buf == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        job.cap = CHUNK;
    }
    if (devset_load(&job.no_flags, no_flags_set) < 0) goto done;
    flags_loaded = 1;
    if (devset_load(&job.no_xattr, no_xattr_set) < 0) goto done;
    xattr_loaded = 1;
    size_t flags_known = job.no_flags.n, xattr_known = job.no_xattr.n;
    job.ctx = EVP_MD_CTX_new();
    job.md = md = EVP_MD_fetch(NULL, "SHA256", NULL); /* fetched once: each init would look it up */
    results = PyMem_Malloc(BLOCK * sizeof *results);
    rows = PyList_New(0);
    left = PyList_New(0);
    if (job.ctx == NULL || md == NULL || results == NULL || rows == NULL || left == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t start = 0; start < count; start += BLOCK) {
        Py_ssize_t end = start + BLOCK < count ? start + BLOCK : count;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = start; i < end; i++) {
            PyObject *name = PyTuple_GET_ITEM(names, i);
            const char *raw = PyBytes_AS_STRING(name);
            if ((size_t)PyBytes_GET_SIZE(name) != strlen(raw)) { /* an embedded NUL: the caller's error */
                memset(&results[i - start], 0, sizeof(Result));
                results[i - start].kind = R_CALLER;
                continue;
            }
            record_one(&job, raw, &results[i - start]);
        }
        Py_END_ALLOW_THREADS
        int failed = 0;
        for (Py_ssize_t i = start; i < end; i++) {
            Result *r = &results[i - start];
            PyObject *name = PyTuple_GET_ITEM(names, i);
            if (!failed) {
                if (r->kind == R_CALLER) {
                    failed = PyList_Append(left, name) < 0;
                } else {
                    PyObject *row = build_row(prefix, name, r);
                    failed = row == NULL || PyList_Append(rows, row) < 0;
                    Py_XDECREF(row);
                }
            }
            free(r->xattrs);
            r->xattrs = NULL;
        }
        if (failed) goto done;
    }
    if (devset_store(&job.no_flags, flags_known, no_flags_set) < 0) goto done;
    if (devset_store(&job.no_xattr, xattr_known, no_xattr_set) < 0) goto done;
    result = Py_BuildValue("(OOiK)", rows, left, job.o_flags, job.nbytes);
done:
    if (have_view)
        PyBuffer_Release(&view);
    else
        PyMem_RawFree(buf_obj == Py_None ? job.buf : NULL);
    if (flags_loaded) free(job.no_flags.devs);
    if (xattr_loaded) free(job.no_xattr.devs);
    EVP_MD_CTX_free(job.ctx);
    EVP_MD_free(md);
    PyMem_Free(results);
    Py_XDECREF(rows);
    Py_XDECREF(left);
    Py_DECREF(names);
    return result;
}

typedef struct {
    char *data;
    size_t len, cap;
    size_t count;
} NameBuf;

static int namebuf_add(NameBuf *b, const char *name, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (grown == NULL) return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, name, n + 1);
    b->len += n + 1;
    b->count++;
    return 0;
}

static PyObject *namebuf_list(const NameBuf *b) {
    PyObject *list = PyList_New((Py_ssize_t)b->count);
    size_t at = 0;
    for (size_t i = 0; list != NULL && i < b->count; i++) {
        size_t n = strlen(b->data + at);
        PyObject *name = PyBytes_FromStringAndSize(b->data + at, (Py_ssize_t)n);
        if (name == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, name);
        at += n + 1;
    }
    return list;
}

PyDoc_STRVAR(listdir_doc,
             "listdir(dir_fd) -> (files, dirs, others)\n\n"
             "The names (bytes) in the directory ``dir_fd``, split as os.scandir's is_file / is_dir\n"
             "(not following symlinks) split them; entries that vanish while being typed are left out.");

static PyObject *fim_listdir(PyObject *self, PyObject *args) {
    int dir_fd;
    if (!PyArg_ParseTuple(args, "i:listdir", &dir_fd)) return NULL;
    NameBuf bufs[3] = {{0}};
    int err = 0, nomem = 0;
    Py_BEGIN_ALLOW_THREADS
    int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (dir == NULL) {
        err = errno;
        if (fd >= 0) close(fd);
    } else {
        struct dirent *e;
        for (;;) {
            errno = 0;
            e = readdir(dir);
            if (e == NULL) break; /* the end, or an error: what was listed so far is the listing */
            const char *n = e->d_name;
            if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
            int kind; /* 0 file, 1 dir, 2 other */
            unsigned char type = e->d_type;
            if (type == DT_UNKNOWN) {
                struct stat st;
                if (fstatat(dir_fd, n, &st, AT_SYMLINK_NOFOLLOW) < 0) continue; /* vanished */
                type = S_ISREG(st.st_mode) ? DT_REG : S_ISDIR(st.st_mode) ? DT_DIR : DT_LNK;
            }
            kind = type == DT_REG ? 0 : type == DT_DIR ? 1 : 2;
            if (namebuf_add(&bufs[kind], n, strlen(n)) < 0) {
                nomem = 1;
                break;
            }
        }
        rewinddir(dir); /* the duplicate shares the caller's offset */
        closedir(dir);
    }
    Py_END_ALLOW_THREADS
    PyObject *out = NULL;
    if (nomem) {
        PyErr_NoMemory();
    } else if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        PyObject *files = namebuf_list(&bufs[0]), *dirs = namebuf_list(&bufs[1]), *others = namebuf_list(&bufs[2]);
        if (files && dirs && others) out = PyTuple_Pack(3, files, dirs, others);
        Py_XDECREF(files);
        Py_XDECREF(dirs);
        Py_XDECREF(others);
    }
    for (int i = 0; i < 3; i++) free(bufs[i].data);
    return out;
}

static void put_le(unsigned char *p, unsigned long long v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

#define KEY_SIZE 44 /* struct "<QqqqIII" */

/* Without the GIL: the key of each name (KEY_SIZE bytes, then 1 when lstat worked, 0 when not). */
static void pack_keys(int dir_fd, PyObject *names, unsigned char *keys, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned char *k = keys + (size_t)i * (KEY_SIZE + 1);
        PyObject *name = PyTuple_GET_ITEM(names, i);
        struct stat st;
        k[KEY_SIZE] = (size_t)PyBytes_GET_SIZE(name) == strlen(PyBytes_AS_STRING(name)) &&
                      fstatat(dir_fd, PyBytes_AS_STRING(name), &st, AT_SYMLINK_NOFOLLOW) == 0;
        if (!k[KEY_SIZE]) continue;
        put_le(k, (unsigned long long)st.st_ino, 8);
        put_le(k + 8, (unsigned long long)(long long)st.st_size, 8);
        put_le(k + 16, (unsigned long long)((long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec), 8);
        put_le(k + 24, (unsigned long long)((long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec), 8);
        put_le(k + 32, st.st_mode, 4);
        put_le(k + 36, st.st_uid, 4);
        put_le(k + 40, st.st_gid, 4);
    }
}

PyDoc_STRVAR(moved_doc,
             "moved(dir_fd, prefix, names, keys, racy, unchanged) -> list[bytes]\n\n"
             "The quick check of ``names`` (relative to ``dir_fd``): a name whose lstat key equals\n"
             "``keys.get(prefix + name)`` and whose path is not in ``racy`` has its path added to the set\n"
             "``unchanged``; the others are returned (to be recorded); vanished names are left out.");

static PyObject *fim_moved(PyObject *self, PyObject *args) {
    int dir_fd;
    PyObject *prefix, *names_arg, *keys_map, *racy, *unchanged;
    if (!PyArg_ParseTuple(args, "iSOOOO!:moved", &dir_fd, &prefix, &names_arg, &keys_map, &racy, &PySet_Type,
                          &unchanged))
        return NULL;
    PyObject *names = bytes_tuple(names_arg);
    if (names == NULL) return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    PyObject *moved = NULL, *get = NULL;
    unsigned char *keys = NULL;
    int racy_check = PyObject_IsTrue(racy);
    if (racy_check < 0) goto fail;
    if (!PyDict_CheckExact(keys_map) && (get = PyObject_GetAttrString(keys_map, "get")) == NULL) goto fail;
    keys = PyMem_Malloc(count ? (size_t)count * (KEY_SIZE + 1) : 1);
    moved = PyList_New(0);
    if (keys == NULL || moved == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    pack_keys(dir_fd, names, keys, count);
    Py_END_ALLOW_THREADS
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix);
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *k = keys + (size_t)i * (KEY_SIZE + 1);
        if (!k[KEY_SIZE]) continue; /* vanished */
        PyObject *name = PyTuple_GET_ITEM(names, i);
        Py_ssize_t nlen = PyBytes_GET_SIZE(name);
        PyObject *path = PyBytes_FromStringAndSize(NULL, plen + nlen);
        if (path == NULL) goto fail;
        memcpy(PyBytes_AS_STRING(path), PyBytes_AS_STRING(prefix), (size_t)plen);
        memcpy(PyBytes_AS_STRING(path) + plen, PyBytes_AS_STRING(name), (size_t)nlen);
        PyObject *recorded = get == NULL ? Py_XNewRef(PyDict_GetItemWithError(keys_map, path))
                                         : PyObject_CallOneArg(get, path);
        int same = 0;
        if (recorded != NULL) {
            if (PyBytes_CheckExact(recorded)) {
                same = PyBytes_GET_SIZE(recorded) == KEY_SIZE && memcmp(PyBytes_AS_STRING(recorded), k, KEY_SIZE) == 0;
            } else if (recorded != Py_None) {
                PyObject *key = PyBytes_FromStringAndSize((const char *)k, KEY_SIZE);
                same = key == NULL ? -1 : PyObject_RichCompareBool(recorded, key, Py_EQ);
                Py_XDECREF(key);
            }
            Py_DECREF(recorded);
        } else if (PyErr_Occurred()) {
            same = -1;
        }
        if (same > 0 && racy_check) {
            int in_racy = PySequence_Contains(racy, path);
            same = in_racy < 0 ? -1 : !in_racy;
        }
        int failed = same < 0 || (same ? PySet_Add(unchanged, path) : PyList_Append(moved, name)) < 0;
        Py_DECREF(path);
        if (failed) goto fail;
    }
    PyMem_Free(keys);
    Py_XDECREF(get);
    Py_DECREF(names);
    return moved;
fail:
    PyMem_Free(keys);
    Py_XDECREF(get);
    Py_XDECREF(moved);
    Py_DECREF(names);
    return NULL;
}

static PyMethodDef methods[] = {
    {"moved", fim_moved, METH_VARARGS, moved_doc},
    {"record", fim_record, METH_VARARGS, record_doc},
    {"listdir", fim_listdir, METH_VARARGS, listdir_doc},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m) {
    if (PyModule_AddIntConstant(m, "SMALL_FILE", SMALL_FILE) < 0) return -1;
    if (PyModule_AddIntConstant(m, "CHUNK", CHUNK) < 0) return -1;
    if (PyModule_AddIntConstant(m, "TRACKED_FLAGS", TRACKED_FLAGS) < 0) return -1;
    PyObject *ioc = PyLong_FromUnsignedLong(FIM_GETFLAGS);
    int rc = ioc == NULL ? -1 : PyModule_AddObjectRef(m, "FS_IOC_GETFLAGS", ioc);
    Py_XDECREF(ioc);
    return rc;
}

static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hostward.agent.fim._fimscan",
    "FIM per-file recording in C (the twin of reader.PathReader._scan_file).", 0, methods, slots,
};

PyMODINIT_FUNC PyInit__fimscan(void) { return PyModuleDef_Init(&module); }
