// node_http.js PORT HOST ROOT -- an HTTP/1.1 server on Node.js that reads ROOT/index.html
// through libuv's thread pool on every request (fs.readFile), so a request crosses the
// event loop, a pool thread and back; V8's platform workers run beside them. The
// X-Served header counts the requests served, state a replica must hold too.
const http = require('http');
const fs = require('fs');
const path = require('path');

const [port, host, root] = process.argv.slice(2);
let served = 0;
http.createServer((req, res) => {
  fs.readFile(path.join(root, 'index.html'), (err, data) => {
    if (err) {
      res.writeHead(404, {'Content-Length': 0});
      res.end();
      return;
    }
    served += 1;
    res.writeHead(200, {'Content-Type': 'text/html', 'Content-Length': data.length,
                        'X-Served': String(served)});
    res.end(data);
  });
}).listen(Number(port), host);
