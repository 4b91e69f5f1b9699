fwp.scan @cut dims(d = 4)
    seq(%q : vector<4xf32>, %k : vector<4xf32>
