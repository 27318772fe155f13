/*
 * Optional compiled helpers for wsclient: masking (RFC 6455 section 5.3) and filling a
 * received message in place.
 *
 * XOR-ing every payload byte with a 4-byte key is the one loop over payload bytes that the
 * protocol needs; in C it runs at memory speed. wsclient.protocol.frames falls back to a
 * pure-Python implementation when this module was not built, and the tests compare both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RELEASE_GIL_ABOVE 65536

static void
xor_with_key(unsigned char *out, const unsigned char *in, Py_ssize_t length,
             const unsigned char *key)
{
    uint64_t key64;
    unsigned char repeated[8];
    Py_ssize_t i = 0;

    for (int j = 0; j < 8; j++) {
        repeated[j] = key[j & 3];
    }
    memcpy(&key64, repeated, 8);
    for (; i + 8 <= length; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= key64;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < length; i++) {
        out[i] = in[i] ^ key[i & 3];
    }
}

/* Large payloads are masked with the GIL released: other threads run meanwhile. */
static void
mask_payload(unsigned char *out, const Py_buffer *data, const Py_buffer *key)
{
    if (data->len >= RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        xor_with_key(out, data->buf, data->len, key->buf);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_with_key(out, data->buf, data->len, key->buf);
    }
}

static int
check_key(Py_buffer *key)
{
    if (key->len != 4) {
        PyErr_SetString(PyExc_ValueError, "the mask key must be 4 bytes");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(mask_doc,
"mask(data, key, /)\n--\n\n"
"Return data XOR-ed with the repeated 4-byte key, as bytes.");

static PyObject *
mask(PyObject *module, PyObject *args)
{
    Py_buffer data, key;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*y*:mask", &data, &key)) {
        return NULL;
    }
    if (check_key(&key) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    mask_payload(out, &data, &key);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return result;
}

PyDoc_STRVAR(masked_frame_doc,
"masked_frame(header, data, key, /)\n--\n\n"
"Return header followed by data XOR-ed with the 4-byte key, as one new bytes object.");

/* A whole client frame in one allocation: no zero-filled buffer, no copy afterwards. */
static PyObject *
masked_frame(PyObject *module, PyObject *args)
{
    Py_buffer header, data, key;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*y*y*:masked_frame", &header, &data, &key)) {
        return NULL;
    }
    if (check_key(&key) < 0) {
        goto done;
    }
    if (data.len > PY_SSIZE_T_MAX - header.len) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, header.len + data.len);
    if (result == NULL) {
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(out, header.buf, header.len);
    mask_payload(out + header.len, &data, &key);
done:
    PyBuffer_Release(&header);
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return result;
}

PyDoc_STRVAR(mask_into_doc,
"mask_into(out, offset, data, key, /)\n--\n\n"
"Write data XOR-ed with the 4-byte key into the writable buffer out at offset.");

/* Masks into a buffer the caller reuses, so a large frame costs no fresh allocation. */
static PyObject *
mask_into(PyObject *module, PyObject *args)
{
    Py_buffer out, data, key;
    Py_ssize_t offset;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "w*ny*y*:mask_into", &out, &offset, &data, &key)) {
        return NULL;
    }
    if (check_key(&key) < 0) {
        goto done;
    }
    if (offset < 0 || offset > out.len || data.len > out.len - offset) {
        PyErr_SetString(PyExc_ValueError, "data does not fit in out at offset");
        goto done;
    }
    unsigned char *target = (unsigned char *)out.buf + offset;
    mask_payload(target, &data, &key);
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return result;
}

/*
 * A bytes object that is filled in place before anyone else sees it. A large message is
 * read straight into the bytes object that becomes the message, so no bytearray has to be
 * zero-filled first and copied into bytes at the end. The writable view keeps the
 * exporter, and so the bytes, alive: no view can outlive its memory.
 */
typedef struct {
    PyObject_HEAD
    PyObject *target;
} BytesFiller;

static int
bytes_filler_getbuffer(BytesFiller *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(self->target),
                             PyBytes_GET_SIZE(self->target), 0, flags);
}

static void
bytes_filler_dealloc(BytesFiller *self)
{
    Py_XDECREF(self->target);
    PyObject_Free(self);
}

static PyBufferProcs bytes_filler_as_buffer = {
    (getbufferproc)bytes_filler_getbuffer,
    NULL,
};

static PyTypeObject BytesFillerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wsclient.protocol._mask.BytesFiller",
    .tp_basicsize = sizeof(BytesFiller),
    .tp_dealloc = (destructor)bytes_filler_dealloc,
    .tp_as_buffer = &bytes_filler_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

PyDoc_STRVAR(unfilled_bytes_doc,
"unfilled_bytes(size, /)\n--\n\n"
"Return (data, view): a new bytes object of size bytes (at least 2) whose content is\n"
"undefined, and a writable memoryview of it. Fill all of data through the view, release\n"
"the view, and only then let data be seen.");

static PyObject *
unfilled_bytes(PyObject *module, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 2) {
        /* Shorter bytes objects may be shared singletons. */
        PyErr_SetString(PyExc_ValueError, "size must be at least 2");
        return NULL;
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL) {
        return NULL;
    }
    BytesFiller *filler = PyObject_New(BytesFiller, &BytesFillerType);
    if (filler == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    Py_INCREF(data);
    filler->target = data;
    PyObject *view = PyMemoryView_FromObject((PyObject *)filler);
    Py_DECREF(filler);
    if (view == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, data, view);
    Py_DECREF(data);
    Py_DECREF(view);
    return result;
}

static PyMethodDef methods[] = {
    {"unfilled_bytes", unfilled_bytes, METH_O, unfilled_bytes_doc},
    {"mask", mask, METH_VARARGS, mask_doc},
    {"masked_frame", masked_frame, METH_VARARGS, masked_frame_doc},
    {"mask_into", mask_into, METH_VARARGS, mask_into_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "wsclient.protocol._mask",
    "Compiled WebSocket masking and in-place message buffers (optional; see "
    "wsclient.protocol.frames).",
    0,
    methods,
};

PyMODINIT_FUNC
PyInit__mask(void)
{
    if (PyType_Ready(&BytesFillerType) < 0) {
        return NULL;
    }
    return PyModule_Create(&module);
}
