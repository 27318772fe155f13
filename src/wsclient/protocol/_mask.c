/*
 * Optional compiled masking for wsclient (RFC 6455 section 5.3).
 *
 * XOR-ing every payload byte with a 4-byte key is the one loop over payload bytes that the
 * protocol needs; in C it runs at memory speed. wsclient.protocol.frames falls back to a
 * pure-Python implementation when this module was not built, and the tests compare both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Payloads at least this long are masked with the GIL released. */
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
    if (data.len >= RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        xor_with_key(out, data.buf, data.len, key.buf);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_with_key(out, data.buf, data.len, key.buf);
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return result;
}

PyDoc_STRVAR(mask_into_doc,
"mask_into(out, start, data, key, /)\n--\n\n"
"Write data XOR-ed with the 4-byte key into out[start:start + len(data)].");

static PyObject *
mask_into(PyObject *module, PyObject *args)
{
    Py_buffer out, data, key;
    Py_ssize_t start;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "w*ny*y*:mask_into", &out, &start, &data, &key)) {
        return NULL;
    }
    if (check_key(&key) < 0) {
        goto done;
    }
    if (start < 0 || start > out.len || data.len > out.len - start) {
        PyErr_SetString(PyExc_ValueError, "the output buffer is too small");
        goto done;
    }
    unsigned char *target = (unsigned char *)out.buf + start;
    if (data.len >= RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        xor_with_key(target, data.buf, data.len, key.buf);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_with_key(target, data.buf, data.len, key.buf);
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return result;
}

static PyMethodDef methods[] = {
    {"mask", mask, METH_VARARGS, mask_doc},
    {"mask_into", mask_into, METH_VARARGS, mask_into_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "wsclient.protocol._mask",
    "Compiled WebSocket masking (optional; see wsclient.protocol.frames).",
    0,
    methods,
};

PyMODINIT_FUNC
PyInit__mask(void)
{
    return PyModule_Create(&module);
}
