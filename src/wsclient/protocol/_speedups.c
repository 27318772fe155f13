/*
 * Optional compiled helpers for wsclient: masking (RFC 6455 section 5.3), filling a
 * received message in place, and parsing the common case of received frames.
 *
 * XOR-ing every payload byte with a 4-byte key is the one loop over payload bytes that the
 * protocol needs; in C it runs at memory speed. Parsing a small frame in Python costs more
 * than everything else a small message needs in the protocol core, so the frames nearly
 * every read holds (whole, small, unfragmented, uncompressed messages) are parsed here;
 * anything else is left to the Python parser. wsclient.protocol.frames and
 * wsclient.protocol.connection fall back to pure-Python implementations when this module
 * was not built, and the tests compare both.
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

/* A whole client frame in one allocation: no zero-filled buffer, no copy afterwards.
 * Called for every small message sent: the fast calling convention, without a tuple of
 * arguments and a format string to parse, costs about a third less. */
static PyObject *
masked_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer header, data, key;
    PyObject *result = NULL;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "masked_frame takes 3 arguments");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &header, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&header);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &key, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&header);
        PyBuffer_Release(&data);
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
    .tp_name = "wsclient.protocol._speedups.BytesFiller",
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

/* The message event classes and the setters of their data slot (see configure_messages). */
static PyTypeObject *text_message_type = NULL;
static PyObject *text_data_slot = NULL;
static PyTypeObject *binary_message_type = NULL;
static PyObject *binary_data_slot = NULL;

PyDoc_STRVAR(configure_messages_doc,
"configure_messages(text_type, text_data, binary_type, binary_data, /)\n--\n\n"
"Set the event classes parse_messages creates, and the descriptors of their data slot.");

static PyObject *
configure_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "configure_messages takes 4 arguments");
        return NULL;
    }
    for (int i = 0; i < 4; i += 2) {
        if (!PyType_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "configure_messages needs classes");
            return NULL;
        }
        if (Py_TYPE(args[i + 1])->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "configure_messages needs slot descriptors");
            return NULL;
        }
    }
    Py_XSETREF(text_message_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(text_data_slot, Py_NewRef(args[1]));
    Py_XSETREF(binary_message_type, (PyTypeObject *)Py_NewRef(args[2]));
    Py_XSETREF(binary_data_slot, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

/* object.__new__(type) with its data slot set, as the Python parser builds an event. */
static PyObject *
new_message(PyTypeObject *type, PyObject *slot, PyObject *data)
{
    PyObject *event = type->tp_alloc(type, 0);
    if (event == NULL) {
        return NULL;
    }
    if (Py_TYPE(slot)->tp_descr_set(slot, event, data) < 0) {
        Py_DECREF(event);
        return NULL;
    }
    return event;
}

PyDoc_STRVAR(parse_messages_doc,
"parse_messages(buffer, position, limit, events, inflate=None, /)\n--\n\n"
"From position on, append an event to events for each whole text or binary frame that is\n"
"unmasked, final, without RSV bits, shorter than 64 KiB and, unless limit is negative, no\n"
"longer than limit. With inflate, a callable, take such frames with RSV1 set too: their\n"
"payload is passed to inflate(payload, is_text, limit), which returns the message's data\n"
"(or raises, and so does this). Stop at anything else (an incomplete or other frame, or\n"
"text that is not valid UTF-8, for the caller to reject) and return where parsing stopped.");

static PyObject *
parse_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "parse_messages takes 4 or 5 arguments");
        return NULL;
    }
    PyObject *inflate = nargs == 5 && args[4] != Py_None ? args[4] : NULL;
    if (text_message_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_messages was not called");
        return NULL;
    }
    Py_ssize_t position = PyLong_AsSsize_t(args[1]);
    if (position == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *events = args[3];
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "events must be a list");
        return NULL;
    }
    Py_buffer buffer;
    if (PyObject_GetBuffer(args[0], &buffer, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = buffer.buf;
    Py_ssize_t end = buffer.len;
    if (position < 0 || position > end) {
        PyBuffer_Release(&buffer);
        PyErr_SetString(PyExc_ValueError, "position outside the buffer");
        return NULL;
    }
    while (end - position >= 2) {
        unsigned char first = data[position];
        /* Below 126 with the mask bit clear: the length itself. */
        Py_ssize_t length = data[position + 1];
        Py_ssize_t start;
        if (length < 126) {
            start = position + 2;
        }
        else if (length == 126 && end - position >= 4) {
            length = ((Py_ssize_t)data[position + 2] << 8) | data[position + 3];
            start = position + 4;
        }
        else {
            break;
        }
        /* FIN and RSV1 with a text or binary opcode: a whole compressed message. */
        int compressed = inflate != NULL && (first == 0xC1 || first == 0xC2);
        /* A compressed payload's limit applies once inflated: inflate enforces it. */
        if (length > end - start || (limit >= 0 && length > limit && !compressed)) {
            break;
        }
        const char *payload = (const char *)data + start;
        PyObject *event;
        if (compressed) {
            PyObject *deflated = PyBytes_FromStringAndSize(payload, length);
            if (deflated == NULL) {
                goto error;
            }
            PyObject *call_args[3] = {deflated, first == 0xC1 ? Py_True : Py_False, args[2]};
            PyObject *inflated = PyObject_Vectorcall(inflate, call_args, 3, NULL);
            Py_DECREF(deflated);
            if (inflated == NULL) {
                goto error;
            }
            if (first == 0xC1) {
                event = new_message(text_message_type, text_data_slot, inflated);
            }
            else {
                event = new_message(binary_message_type, binary_data_slot, inflated);
            }
            Py_DECREF(inflated);
        }
        else if (first == 0x82) {
            PyObject *bytes = PyBytes_FromStringAndSize(payload, length);
            if (bytes == NULL) {
                goto error;
            }
            event = new_message(binary_message_type, binary_data_slot, bytes);
            Py_DECREF(bytes);
        }
        else if (first == 0x81) {
            PyObject *text = PyUnicode_DecodeUTF8(payload, length, NULL);
            if (text == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    goto error;
                }
                PyErr_Clear();
                break;
            }
            event = new_message(text_message_type, text_data_slot, text);
            Py_DECREF(text);
        }
        else {
            break;
        }
        if (event == NULL) {
            goto error;
        }
        int appended = PyList_Append(events, event);
        Py_DECREF(event);
        if (appended < 0) {
            goto error;
        }
        position = start + length;
    }
    PyBuffer_Release(&buffer);
    return PyLong_FromSsize_t(position);
error:
    PyBuffer_Release(&buffer);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure_messages", (PyCFunction)(void (*)(void))configure_messages, METH_FASTCALL,
     configure_messages_doc},
    {"parse_messages", (PyCFunction)(void (*)(void))parse_messages, METH_FASTCALL,
     parse_messages_doc},
    {"unfilled_bytes", unfilled_bytes, METH_O, unfilled_bytes_doc},
    {"mask", mask, METH_VARARGS, mask_doc},
    {"masked_frame", (PyCFunction)(void (*)(void))masked_frame, METH_FASTCALL,
     masked_frame_doc},
    {"mask_into", mask_into, METH_VARARGS, mask_into_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "wsclient.protocol._speedups",
    "Compiled WebSocket masking, in-place message buffers and small-frame parsing "
    "(optional; see wsclient.protocol.frames and wsclient.protocol.connection).",
    0,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&BytesFillerType) < 0) {
        return NULL;
    }
    return PyModule_Create(&module);
}
